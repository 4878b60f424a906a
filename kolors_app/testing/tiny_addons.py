"""Tiny random-weight copies of the Control add-on repos (ControlNets, inpainting U-Net, depth, pose), real layouts."""

import copy
import json
from pathlib import Path

import torch
from diffusers import ControlNetModel, KolorsPipeline, UNet2DConditionModel
from transformers import (BitConfig, DPTConfig, DPTForDepthEstimation, DPTImageProcessor, VitPoseBackboneConfig,
                          VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessor)

from kolors_app.core.addons import CONTROLNET_REPOS, DEPTH_REPO, INPAINTING_REPO, POSE_REPO
from kolors_app.testing.tiny_presets import seeded

# Seeds of the add-ons, apart from the base model's (0-5), so that no two share weights.
CONTROLNET_SEEDS = {"canny": 10, "depth": 11, "pose": 12}
INPAINTING_SEED, DEPTH_SEED, POSE_SEED = 13, 14, 15
# ControlNet's output convolutions start at zero in training; random ones make each tiny unit change the image.
ZERO_CONV_STD = 0.2


def build_controlnet_repo(path: Path, unet_config: dict, kind: str) -> Path:
    """A Kolors ControlNet: the U-Net's encoder half plus conditioning layers, saved as `ControlNetModel_JQ`."""
    with seeded(CONTROLNET_SEEDS[kind]):
        unet = UNet2DConditionModel(**unet_config)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 32, 32))
        # Its own text projection, unlike the U-Net's: a pipeline that skips it gets other pixels.
        torch.nn.init.normal_(controlnet.encoder_hid_proj.weight, std=0.2)
        zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                      controlnet.controlnet_cond_embedding.conv_out]
        for conv in zero_convs:
            torch.nn.init.normal_(conv.weight, std=ZERO_CONV_STD)
            torch.nn.init.normal_(conv.bias, std=ZERO_CONV_STD)
    controlnet.eval().save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    config["_class_name"] = "ControlNetModel_JQ"  # as published: the name of Kuaishou's class
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def build_inpainting_repo(path: Path, base: Path, unet_config: dict) -> Path:
    """Kolors-Inpainting: a whole pipeline folder whose U-Net takes 9 channels (latents, masked latents, mask)."""
    with seeded(INPAINTING_SEED):
        unet = UNet2DConditionModel(**{**unet_config, "in_channels": 9}).eval()
    # The other components are the base model's: the app must never load them from here.
    pipe = KolorsPipeline.from_pretrained(base, unet=unet, torch_dtype=torch.float32)
    half = KolorsPipeline(**{name: copy.deepcopy(part).to(torch.float16) if isinstance(part, torch.nn.Module)
                             else part for name, part in pipe.components.items()})
    half.save_pretrained(path, variant="fp16")
    pipe.save_pretrained(path)
    (path / "scheduler" / "scheduler_config.json").write_text(
        (base / "scheduler" / "scheduler_config.json").read_text())
    return path


def build_depth_repo(path: Path) -> Path:
    """MiDaS DPT-Hybrid (a BiT backbone under a ViT, DPT head) at a tiny width."""
    backbone = BitConfig(global_padding="same", layer_type="bottleneck", depths=[1, 1, 1], hidden_sizes=[16, 32, 64],
                         embedding_size=8, out_features=["stage1", "stage2", "stage3"], num_groups=4)
    config = DPTConfig(is_hybrid=True, backbone_config=backbone, hidden_size=32, num_hidden_layers=4,
                       num_attention_heads=2, intermediate_size=64, image_size=64, patch_size=16,
                       backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[16, 32, 32, 32], fusion_hidden_size=16,
                       readout_type="project", backbone_featmap_shape=[1, 64, 4, 4])
    with seeded(DEPTH_SEED):
        model = DPTForDepthEstimation(config).eval()
    model.save_pretrained(path)
    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=True, ensure_multiple_of=16,
                      do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path


def build_pose_repo(path: Path) -> Path:
    """ViTPose (simple decoder, 17 COCO keypoints) at a tiny width and a 64x48 input."""
    backbone = VitPoseBackboneConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     image_size=[64, 48], patch_size=[16, 16], out_indices=[2])
    with seeded(POSE_SEED):
        model = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17)).eval()
    model.save_pretrained(path)
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(path)
    return path


def build_addon_repos(root: Path, unet_config: dict, kolors_repo: str) -> None:
    """Write every add-on repo under root/<repo id>."""
    root = Path(root)
    for kind, repo in CONTROLNET_REPOS.items():
        build_controlnet_repo(root / repo, unet_config, kind)
    build_inpainting_repo(root / INPAINTING_REPO, root / kolors_repo, unet_config)
    build_depth_repo(root / DEPTH_REPO)
    build_pose_repo(root / POSE_REPO)

