"""The add-on models of the Control features: their Hub repos and published sizes."""

CONTROLNET_REPOS = {
    "canny": "Kwai-Kolors/Kolors-ControlNet-Canny",
    "depth": "Kwai-Kolors/Kolors-ControlNet-Depth",
    "pose": "Kwai-Kolors/Kolors-ControlNet-Pose",
}
INPAINTING_REPO = "Kwai-Kolors/Kolors-Inpainting"
# Upstream's depth annotator is MiDaS DPT-Hybrid; transformers loads it as DPTForDepthEstimation.
DEPTH_REPO = "Intel/dpt-hybrid-midas"
# Upstream draws poses with DWPose (ONNX). ViTPose is the whole-body-free pose model transformers can load.
POSE_REPO = "usyd-community/vitpose-base-simple"
# Files each add-on needs (everything else in the repo is never downloaded).
PATTERNS = {
    "controlnet": ["config.json", "diffusion_pytorch_model.safetensors"],
    "inpainting": ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors"],
    "depth": ["config.json", "preprocessor_config.json", "model.safetensors"],
    "pose": ["config.json", "preprocessor_config.json", "model.safetensors"],
}
# Published sizes in GB, for the status bar and the memory plans before a file is on disk.
SIZES_GB = {"controlnet": 2.5, "inpainting": 5.2, "depth": 0.49, "pose": 0.36}
