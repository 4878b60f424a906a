"""Scheduler display names -> a fresh scheduler built from the model's own scheduler config."""

from __future__ import annotations

from typing import Any

# Each entry: diffusers class name and the options that make it the sampler users know by this name.
# Every scheduler is built with from_config(model_config) so Kolors' 1100-step training schedule is kept.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": False}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler",
                            {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"}),
    "EDM DPM++ 2M": ("EDMDPMSolverMultistepScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
}
SCHEDULER_NAMES = tuple(SCHEDULERS)
DEFAULT_SCHEDULER = "Euler"

# Upstream advice: (steps, guidance) that each sampler is known to work well with.
RECOMMENDED = {
    "Euler": (50, 5.0),
    "Euler a": (50, 5.0),
    "DPM++ 2M": (25, 5.0),
    "DPM++ 2M Karras": (25, 6.5),
    "DPM++ 2M SDE Karras": (25, 6.5),
    "EDM DPM++ 2M": (25, 5.0),
    "UniPC": (25, 5.0),
    "DDIM": (50, 5.0),
}


def build_scheduler(name: str, model_config: dict):
    """A new scheduler object for one request (schedulers carry state between steps)."""
    import diffusers

    class_name, options = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(model_config, **options)
