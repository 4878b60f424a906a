"""Optional speed-ups applied once to the loaded modules; each is a setting, off unless measured better."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# Two shapes are enough to make torch.compile settle on dynamic sizes before the first visitor arrives.
WARM_UP_SIZES = ((1024, 1024), (1152, 896))
WARM_UP_STEPS = 2


def apply_gpu_options(pipe, settings, plan=None) -> list[str]:
    """Apply the options chosen in settings to the shared U-Net and VAE; returns what was applied.

    VAE slicing and tiling are set per run by PipelineManager.configure_vae (they depend on the request).
    """
    applied = []
    if settings.attention == "eager":
        from diffusers.models.attention_processor import AttnProcessor

        pipe.unet.set_attn_processor(AttnProcessor())
        pipe.vae.set_attn_processor(AttnProcessor())
        applied.append("eager attention")
    if settings.fuse_qkv:
        for model in (pipe.unet, pipe.vae):
            model.fuse_qkv_projections()
            share_fused_weights(model)
        applied.append("fused qkv")
    if settings.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if settings.compile:
        compile_unet(pipe.unet)
        applied.append("compiled U-Net blocks")
        if plan is None or plan.offload == "none":
            warm_up(pipe)
        else:
            log.warning("compile with offload %r: no warm-up at load; the first run compiles", plan.offload)
    if applied:
        log.info("speed options: %s", ", ".join(applied))
    return applied


def share_fused_weights(model) -> None:
    """Point to_q/to_k/to_v at slices of the fused matrix, so that fusing adds no weight memory."""
    from diffusers.models.attention_processor import Attention

    # diffusers keeps the separate projections (the IP-Adapter's processors use them): as views of
    # the fused weight they cost nothing, where copies would add a quarter of the U-Net (1.2 GiB in fp16).
    # Moving the model afterwards (offload) copies each view on its own, so only a model that stays put keeps this.
    for module in model.modules():
        if not isinstance(module, Attention) or not module.fused_projections:
            continue
        fused, parts = ((module.to_kv, (module.to_k, module.to_v)) if module.is_cross_attention
                        else (module.to_qkv, (module.to_q, module.to_k, module.to_v)))
        start = 0
        for part in parts:
            rows = part.out_features
            part.weight = torch.nn.Parameter(fused.weight.data[start:start + rows], requires_grad=False)
            if part.bias is not None:
                part.bias = torch.nn.Parameter(fused.bias.data[start:start + rows], requires_grad=False)
            start += rows


def compile_unet(unet) -> None:
    """Regional compilation: each repeated transformer block compiles once, with sizes left dynamic."""
    # Regional compilation takes seconds instead of minutes and, with dynamic shapes, one graph
    # serves every preset size instead of one recompilation per width x height.
    unet.compile_repeated_blocks(fullgraph=True, dynamic=True)


def warm_up(pipe, sizes=WARM_UP_SIZES, steps: int = WARM_UP_STEPS) -> None:
    """Run short generations so compilation happens at load, not in a visitor's first request."""
    for width, height in sizes:
        pipe(prompt="warm-up", negative_prompt="", width=width, height=height, num_inference_steps=steps,
             output_type="latent")


def recompile_count() -> int:
    """How many graphs torch.compile has built so far in this process (a new one per recompilation)."""
    from torch._dynamo.utils import counters

    return counters["stats"].get("unique_graphs", 0)
