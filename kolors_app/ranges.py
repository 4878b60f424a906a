"""Saved parameters checked against the limits before they are put back into the controls (restore)."""

from __future__ import annotations

from typing import Any

from .config import Limits
from .params import MAX_SEED, ValidationError
from .schedulers import SCHEDULER_NAMES


def check_restorable(parameters: dict[str, Any], limits: Limits, field: str = "parameters") -> dict[str, Any]:
    """The parameters unchanged, or a ValidationError naming the first value no control can hold."""

    def within(name: str, low: float, high: float, low_open: bool = False) -> None:
        value = parameters.get(name)
        if value is None:
            return
        if not (low < value <= high if low_open else low <= value <= high):
            raise ValidationError(f"{field}.{name}", f"must be from {low} to {high}, got {value!r}")

    for name in ("width", "height"):
        within(name, limits.min_size, limits.max_size)
        if parameters.get(name) is not None and parameters[name] % 8:
            raise ValidationError(f"{field}.{name}", f"must be a multiple of 8, got {parameters[name]}")
    within("num_inference_steps", 1, limits.max_steps)
    within("guidance_scale", 0, limits.max_guidance)
    within("num_images", 1, limits.max_images)
    within("seed", -1, MAX_SEED)
    within("strength", 0, 1, low_open=True)
    within("ip_adapter_scale", 0, 2)
    if "scheduler" in parameters and parameters["scheduler"] not in SCHEDULER_NAMES:
        raise ValidationError(f"{field}.scheduler", f"must be one of {', '.join(SCHEDULER_NAMES)}; "
                                                    f"got {parameters['scheduler']!r}")
    return parameters
