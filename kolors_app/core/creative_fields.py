"""The creative part of a request, typed: the LoRA choices, the hires fix, and their fixed bounds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kolors_app.core.config import Limits
from kolors_app.core.errors import ValidationError

MAX_LORAS = 8
LORA_WEIGHT_RANGE = (-4.0, 4.0)
MAX_STYLES = 8
LATENT = "Latent"  # the upscaler that works on the latents, as A1111 names it
DEFAULT_UPSCALE = 1.5
DEFAULT_STRENGTH = 0.45  # A1111's range for a hires pass is about 0.35-0.5; latent wants the upper end
MAX_UPSCALE = 4.0
# HiresFix attribute -> flat parameter name.
HIRES_KEYS = {"upscale": "hires_upscale", "steps": "hires_steps", "upscaler": "hires_upscaler",
              "denoising_strength": "hires_denoising_strength"}


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA of a request and its weight; `hash` is A1111's short hash where an image recorded it."""

    name: str
    weight: float = 1.0
    hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As the flat parameters hold it: {name, weight}, plus hash when known."""
        values: dict[str, Any] = {"name": self.name, "weight": self.weight}
        if self.hash is not None:
            values["hash"] = self.hash
        return values


@dataclass(frozen=True)
class HiresFix:
    """The second pass of a hires fix; steps 0 means as many as the first pass (A1111)."""

    upscale: float = DEFAULT_UPSCALE
    upscaler: str = LATENT
    steps: int = 0
    denoising_strength: float = DEFAULT_STRENGTH

    def to_dict(self) -> dict[str, Any]:
        """Its attributes as plain JSON values."""
        return dataclasses.asdict(self)

    def flat_values(self) -> dict[str, Any]:
        """As flat parameters: hires_upscale, hires_steps, hires_upscaler, hires_denoising_strength."""
        return {HIRES_KEYS[key]: value for key, value in self.to_dict().items()}


def hires_target_size(width: int, height: int, factor: float, limits: Limits) -> tuple[int, int]:
    """The second pass's size: factor times the base, rounded down to multiples of 8, within the size limit."""
    size = (int(width * factor) // 8 * 8, int(height * factor) // 8 * 8)
    if max(size) > limits.max_size:
        most = limits.max_size / max(width, height)
        raise ValidationError("hires_upscale", f"{factor:g}x of {width}x{height} is {size[0]}x{size[1]}, above the "
                                               f"{limits.max_size} px limit; at most {most:.2f}x here",
                              "out_of_range", {"min": 1.0, "max": round(most, 2)})
    return size
