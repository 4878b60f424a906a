"""PipelineManager: load Kolors once and hand each mode a pipeline that shares the same weights."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .config import Settings

log = logging.getLogger(__name__)

IP_ADAPTER_WEIGHTS = "ip_adapter_plus_general.safetensors"
# Published peak of the fp16 pipeline fully on the GPU at 1024x1024 is 20.6 GiB (KOLORS.md);
# model offload keeps one component at a time on the GPU, the 12.5 GB text encoder being the largest.
FULL_GPU_BYTES = 22 * 2**30
MODEL_OFFLOAD_BYTES = 14 * 2**30


@dataclass(frozen=True)
class Plan:
    """Where and how the model runs."""

    device: str
    dtype: torch.dtype
    offload: str

    def describe(self) -> str:
        """One line for the status bar and the logs."""
        return f"{self.device}, {str(self.dtype).removeprefix('torch.')}, offload: {self.offload}"


def resolve_device(choice: str) -> str:
    """`auto` picks CUDA, then Apple's MPS, then the CPU."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(choice: str, device: str) -> torch.dtype:
    """`auto` is float16 on an accelerator and float32 on the CPU (fp16 matmuls there are slow)."""
    if choice == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    return getattr(torch, choice)


def free_gpu_bytes() -> int:
    """Free memory of the current CUDA device, 0 without one."""
    if not torch.cuda.is_available():
        return 0
    free, _total = torch.cuda.mem_get_info()
    return free


def resolve_offload(choice: str, device: str, free_bytes: int) -> str:
    """`auto`: everything on the GPU if it fits, else model offload, else sequential offload."""
    if device != "cuda":
        return "none"
    if choice != "auto":
        return choice
    if free_bytes >= FULL_GPU_BYTES:
        return "none"
    return "model" if free_bytes >= MODEL_OFFLOAD_BYTES else "sequential"


def make_plan(settings: Settings) -> Plan:
    """The plan for these settings on this machine."""
    device = resolve_device(settings.device)
    return Plan(device, resolve_dtype(settings.dtype, device),
                resolve_offload(settings.offload, device, free_gpu_bytes()))


def model_source(settings: Settings) -> str:
    """A Hub repo id or local directory; `tiny` builds the offline random-weight model."""
    if settings.model == "tiny":
        from .tiny import KOLORS_REPO, tiny_model_dir

        return str(tiny_model_dir() / KOLORS_REPO)
    return settings.model


def ip_adapter_source(settings: Settings) -> str:
    """The IP-Adapter repo; the tiny model comes with its own tiny IP-Adapter."""
    if settings.model == "tiny":
        from .tiny import IP_ADAPTER_REPO, tiny_model_dir

        return str(tiny_model_dir() / IP_ADAPTER_REPO)
    return settings.ip_adapter


def has_fp16_variant(source: str) -> bool:
    """Hub repos of Kolors ship fp16 files; a local copy may not."""
    path = Path(source)
    return not path.is_dir() or any(path.glob("*/*.fp16.*"))


def load_kolors(source: str, plan: Plan):
    """The real loader: `KolorsPipeline.from_pretrained`, fp16 files whenever they exist."""
    from diffusers import KolorsPipeline

    variant = "fp16" if has_fp16_variant(source) else None
    return KolorsPipeline.from_pretrained(source, dtype=plan.dtype, variant=variant)


class PipelineManager:
    """Owns the one loaded copy of Kolors and the pipelines built on it."""

    def __init__(self, settings: Settings, loader: Callable[[str, Plan], Any] = load_kolors):
        self.settings = settings
        self._loader = loader
        self._load_lock = threading.Lock()
        # One generation at a time per process: the pipelines share a U-Net and a scheduler slot.
        self.run_lock = threading.Lock()
        self.plan: Plan | None = None
        self.status = "not loaded"
        self._pipes: dict[str, Any] = {}
        self._ip_parts: dict[str, Any] | None = None
        self._ip_attached = False
        self._offloaded_pipe = None

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return "text_to_image" in self._pipes

    def load(self):
        """Load the base pipeline once (thread-safe); later calls return it at once."""
        if self.loaded:
            return self._pipes["text_to_image"]
        with self._load_lock:
            if self.loaded:
                return self._pipes["text_to_image"]
            plan = make_plan(self.settings)
            source = model_source(self.settings)
            self.status = f"loading {self.settings.model} ({plan.describe()})"
            log.info(self.status)
            pipe = self._loader(source, plan)
            if plan.dtype == torch.float16:
                # The SDXL VAE overflows in fp16 (black/NaN images): diffusers upcasts its decode when told.
                pipe.vae.register_to_config(force_upcast=True)
            if plan.offload == "none":
                pipe.to(plan.device)
            self.plan = plan
            self._pipes["text_to_image"] = pipe
            self.status = f"{self.settings.model} on {plan.describe()}"
            return pipe

    @property
    def scheduler_config(self) -> dict:
        """The model's own scheduler config (keeps Kolors' 1100-step training schedule)."""
        return self.load().scheduler.config

    def pipeline(self, mode: str, with_init_image: bool = False):
        """The pipeline for a mode; every one shares the base pipeline's modules."""
        from diffusers import KolorsImg2ImgPipeline, KolorsPipeline

        base = self.load()
        key = mode if mode != "ip_adapter" else ("ip_adapter_init" if with_init_image else "ip_adapter")
        if key not in self._pipes:
            if key == "image_to_image":
                self._pipes[key] = KolorsImg2ImgPipeline.from_pipe(base)
            else:
                parts = self._load_ip_adapter()
                cls = KolorsImg2ImgPipeline if with_init_image else KolorsPipeline
                self._pipes[key] = cls.from_pipe(base, image_encoder=parts["image_encoder"],
                                                 feature_extractor=parts["feature_extractor"])
        pipe = self._pipes[key]
        self._use_ip_adapter(mode == "ip_adapter")
        self._apply_offload(pipe)
        return pipe

    def _apply_offload(self, pipe) -> None:
        # Offload hooks live on the shared modules, so they are re-attached when another pipeline runs.
        if self.plan.offload == "none" or pipe is self._offloaded_pipe:
            return
        if self.plan.offload == "model":
            pipe.enable_model_cpu_offload(device=self.plan.device)
        else:
            pipe.enable_sequential_cpu_offload(device=self.plan.device)
        self._offloaded_pipe = pipe

    def _load_ip_adapter(self) -> dict[str, Any]:
        """Load the CLIP image encoder and the IP-Adapter weights once, then detach them from the U-Net."""
        if self._ip_parts is not None:
            return self._ip_parts
        from diffusers import KolorsPipeline
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        base = self.load()
        repo, revision = ip_adapter_source(self.settings), self.settings.ip_adapter_revision
        self.status = f"loading IP-Adapter {repo}"
        encoder = CLIPVisionModelWithProjection.from_pretrained(
            repo, subfolder="image_encoder", revision=revision, dtype=self.plan.dtype)
        processor = CLIPImageProcessor.from_pretrained(repo, subfolder="image_encoder", revision=revision)
        if self.plan.offload == "none":
            encoder.to(self.plan.device)
        unet = base.unet
        plain = {"processors": unet.attn_processors, "text_proj": unet.encoder_hid_proj}
        loader_pipe = KolorsPipeline.from_pipe(base, image_encoder=encoder, feature_extractor=processor)
        loader_pipe.load_ip_adapter(repo, subfolder="", weight_name=IP_ADAPTER_WEIGHTS, revision=revision,
                                    image_encoder_folder=None)
        self._ip_parts = {
            "image_encoder": encoder, "feature_extractor": processor, "plain": plain,
            "processors": unet.attn_processors, "image_proj": unet.encoder_hid_proj,
        }
        self._ip_attached = True
        self._use_ip_adapter(False)
        self.status = f"{self.settings.model} on {self.plan.describe()}"
        return self._ip_parts

    def _use_ip_adapter(self, wanted: bool) -> None:
        """Swap the IP-Adapter's attention processors in or out; no weight is loaded or copied."""
        if self._ip_parts is None or wanted == self._ip_attached:
            return
        unet, parts = self._pipes["text_to_image"].unet, self._ip_parts
        # The image projection has attention layers of its own: swap it before the processors.
        if wanted:
            unet.text_encoder_hid_proj = parts["plain"]["text_proj"]
            unet.encoder_hid_proj = parts["image_proj"]
            unet.config.encoder_hid_dim_type = "ip_image_proj"
            unet.set_attn_processor(dict(parts["processors"]))
        else:
            unet.text_encoder_hid_proj = None
            unet.encoder_hid_proj = parts["plain"]["text_proj"]
            unet.config.encoder_hid_dim_type = "text_proj"
            unet.set_attn_processor(dict(parts["plain"]["processors"]))
        self._ip_attached = wanted

    def tokenizer_length(self, text: str) -> int:
        """How many tokens the text encoder sees for this text (the tokenizer adds 2 prefix tokens)."""
        tokenizer = self.load().tokenizer
        return len(tokenizer(text)["input_ids"])

    def release_memory(self) -> None:
        """Give cached GPU memory back after a failed or stopped run."""
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
