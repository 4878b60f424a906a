"""Hires fix as AUTOMATIC1111 does it: base size, upscale, then image-to-image with its own steps and strength."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from kolors_app.core.config import Limits
from kolors_app.core.params import ValidationError
from kolors_app.creative.upscalers import LATENT, UpscalerLibrary, check_factor, upscale_latents

DEFAULT_UPSCALE = 1.5
DEFAULT_STRENGTH = 0.45  # A1111's range for a hires pass is about 0.35-0.5; latent wants the upper end
MAX_UPSCALE = 4.0
NATIVE_PIXELS = 1024 * 1024
# A1111 infotext labels of the hires fix.
LABELS = {"upscale": "Hires upscale", "steps": "Hires steps", "upscaler": "Hires upscaler",
          "denoising_strength": "Denoising strength"}


@dataclass(frozen=True)
class HiresFix:
    """The second pass of a hires fix; steps 0 means as many as the first pass (A1111)."""

    upscale: float = DEFAULT_UPSCALE
    upscaler: str = LATENT
    steps: int = 0
    denoising_strength: float = DEFAULT_STRENGTH

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, as stored in the PNG."""
        return dataclasses.asdict(self)


def target_size(width: int, height: int, factor: float, limits: Limits) -> tuple[int, int]:
    """The second pass's size: factor times the base, rounded down to multiples of 8, within the size limit."""
    size = (int(width * factor) // 8 * 8, int(height * factor) // 8 * 8)
    if max(size) > limits.max_size:
        most = limits.max_size / max(width, height)
        raise ValidationError("hires_upscale", f"{factor:g}x of {width}x{height} is {size[0]}x{size[1]}, above the "
                                               f"{limits.max_size} px limit; at most {most:.2f}x here")
    return size


def check_hires(values, width: int, height: int, base_steps: int, limits: Limits,
                upscalers: UpscalerLibrary | None) -> HiresFix | None:
    """A HiresFix from a dict (or None for off); every bad field is named."""
    if values is None or values is False:
        return None
    if isinstance(values, HiresFix):
        values = values.to_dict()
    if not isinstance(values, dict):
        raise ValidationError("hires", f"must be an object with upscale, upscaler, steps, denoising_strength")
    unknown = set(values) - set(LABELS)
    if unknown:
        raise ValidationError("hires", f"unknown keys {sorted(unknown)}; allowed: {sorted(LABELS)}")
    hires = HiresFix(**values)
    check_factor(hires.upscale, "hires_upscale", MAX_UPSCALE)
    steps = hires.steps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= limits.max_steps:
        raise ValidationError("hires_steps", f"must be a whole number from 0 (as the first pass) to "
                                             f"{limits.max_steps}, got {steps!r}")
    strength = hires.denoising_strength
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ValidationError("hires_denoising_strength", f"must be above 0 to 1, got {strength!r}")
    if int((steps or base_steps) * strength) < 1:
        raise ValidationError("hires_denoising_strength", "times the hires steps must give at least one step")
    if not isinstance(hires.upscaler, str):
        raise ValidationError("hires_upscaler", f"must be an upscaler name, got {hires.upscaler!r}")
    if upscalers is not None:  # None: the name is checked later, against the app's upscaler folder
        upscalers.check(hires.upscaler, "hires_upscaler")
    target_size(width, height, hires.upscale, limits)
    return dataclasses.replace(hires, upscale=float(hires.upscale), denoising_strength=float(strength))


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


def infotext(hires: HiresFix | dict | None) -> dict[str, Any]:
    """A1111's labels and values for the PNG's parameters line."""
    if not hires:
        return {}
    values = hires.to_dict() if isinstance(hires, HiresFix) else hires
    return {LABELS[key]: values[key] for key in LABELS if key in values}


def from_infotext(labels: dict[str, str]) -> dict[str, Any] | None:
    """The hires settings of an A1111 parameters line (None when it has no hires fix)."""
    if "Hires upscale" not in labels and "Hires upscaler" not in labels:
        return None
    values: dict[str, Any] = {"upscale": DEFAULT_UPSCALE, "upscaler": LATENT, "steps": 0,
                              "denoising_strength": DEFAULT_STRENGTH}
    try:
        if "Hires upscale" in labels:
            values["upscale"] = float(labels["Hires upscale"])
        if "Hires steps" in labels:
            values["steps"] = int(labels["Hires steps"])
        if "Denoising strength" in labels:
            values["denoising_strength"] = float(labels["Denoising strength"])
    except ValueError as error:
        raise ValidationError("parameters", f"a Hires value is not a number: {error}") from None
    upscaler = labels.get("Hires upscaler", LATENT)
    # A1111 spells its latent modes "Latent (bicubic)" and so on; they map to our one latent upscaler.
    values["upscaler"] = LATENT if upscaler.startswith("Latent") else upscaler
    return values
