"""Hires fix as AUTOMATIC1111 does it: base size, upscale, then image-to-image with its own steps and strength.

The settings (HiresFix) and their checks are the request's (core/creative_fields.py, core/validation.py); this
module runs the second pass.
"""

from __future__ import annotations

from typing import Callable

import torch

from kolors_app.core.creative_fields import LATENT, HiresFix
from kolors_app.creative.upscalers import UpscalerLibrary, upscale_latents

NATIVE_PIXELS = 1024 * 1024


def first_pass_output_type(hires: HiresFix) -> str:
    """Latent keeps the first pass in latent space; every other upscaler works on decoded pixels."""
    return "latent" if hires.upscaler == LATENT else "pil"


def second_pass(img2img_pipe, first, hires: HiresFix, size: tuple[int, int], arguments: dict, base_steps: int,
                seeds: list[int], upscalers: UpscalerLibrary | None, callback: Callable | None = None):
    """Upscale the first pass (latents or images) and refine it with image-to-image at the hires size."""
    width, height = size
    if hires.upscaler == LATENT:
        image = upscale_latents(first.images, width, height)
    else:
        image = [upscalers.upscale(picture, hires.upscaler, width / picture.width).resize((width, height))
                 for picture in first.images]
    if img2img_pipe.device.type != "cpu" and width * height > NATIVE_PIXELS:
        # Above the native size the VAE decode dominates peak memory on a GPU; tiles keep it bounded.
        img2img_pipe.vae.enable_tiling()
    second = {key: value for key, value in arguments.items() if key not in ("width", "height", "generator", "image",
                                                                             "strength", "num_inference_steps")}
    return img2img_pipe(
        **second, image=image, strength=hires.denoising_strength, width=width, height=height,
        num_inference_steps=hires.steps or base_steps,
        # The same seeds as the first pass, as A1111 does.
        generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
        callback_on_step_end=callback)
