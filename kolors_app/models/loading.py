"""Load Kolors under a memory plan (dtypes, fp16 files, 8-bit/4-bit text encoder) and place it where the plan says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kolors_app.hub import downloads
from kolors_app.models import memory
from kolors_app.models.memory import Plan
from kolors_app.models.text_encoder import TextEncoderOnCPU


def has_fp16_variant(source: str) -> bool:
    """Hub repos of Kolors ship fp16 files; a local copy may not."""
    path = Path(source)
    return not path.is_dir() or downloads.has_variant(path, "fp16")


def cpu_text_encoder_dtype(plan: Plan) -> torch.dtype:
    """float32 for a text encoder on the CPU (fp16 matmuls are slow there), bfloat16 if RAM is short (25 vs 12.5 GB)."""
    if plan.device == "cpu":
        return plan.dtype
    import psutil

    return torch.float32 if psutil.virtual_memory().available >= memory.CPU_TEXT_ENCODER_FP32_RAM else torch.bfloat16


def quantization_config(plan: Plan):
    """diffusers' PipelineQuantizationConfig for an 8-bit or 4-bit text encoder (bitsandbytes), else None."""
    if not plan.needs_bitsandbytes():
        return None
    from diffusers import PipelineQuantizationConfig
    from transformers import BitsAndBytesConfig

    # ChatGLM is a transformers model, so it takes transformers' BitsAndBytesConfig.
    if plan.text_encoder == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=plan.dtype)
    return PipelineQuantizationConfig(quant_mapping={"text_encoder": config})


def loader_arguments(source: str, plan: Plan) -> dict[str, Any]:
    """Keyword arguments of `KolorsPipeline.from_pretrained` for this plan."""
    arguments: dict[str, Any] = {"variant": "fp16" if has_fp16_variant(source) else None, "dtype": plan.dtype}
    if plan.text_encoder == "cpu":
        arguments["dtype"] = {"default": plan.dtype, "text_encoder": cpu_text_encoder_dtype(plan)}
    config = quantization_config(plan)
    if config is not None:
        arguments["quantization_config"] = config
    return arguments


def load_kolors(source: str, plan: Plan):
    """The real loader: `KolorsPipeline.from_pretrained`, fp16 files whenever they exist."""
    from diffusers import KolorsPipeline

    return KolorsPipeline.from_pretrained(source, **loader_arguments(source, plan))


def place(pipe, plan: Plan):
    """Put a freshly loaded pipeline where the plan says (offload hooks come later, per pipeline)."""
    if plan.dtype == torch.float16:
        # The SDXL VAE overflows in fp16 (black/NaN images): diffusers upcasts its decode when told.
        pipe.vae.register_to_config(force_upcast=True)
    if plan.text_encoder == "cpu" and not isinstance(pipe.text_encoder, TextEncoderOnCPU):
        pipe.text_encoder = TextEncoderOnCPU(pipe.text_encoder, plan.dtype)
    if plan.offload == "none":
        # bitsandbytes modules are already on the GPU; diffusers leaves them where they are.
        pipe.to(plan.device)
    return pipe

