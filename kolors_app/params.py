"""Requests, results and their validation: every bad input is refused here, before any model work."""

from __future__ import annotations

import dataclasses
import math
import numbers
import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .config import Limits
from .schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES

MAX_SEED = 2**32 - 1
MODEL_NAME = "Kolors"
IMAGE_FIELDS = ("image", "ip_adapter_image")


class ValidationError(ValueError):
    """A request field is out of range; the message names the field and what is allowed."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class TextToImageRequest:
    """What a text-to-image generation needs."""

    prompt: str = ""
    negative_prompt: str = ""
    width: int = 1024
    height: int = 1024
    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    scheduler: str = DEFAULT_SCHEDULER
    seed: int | None = None
    num_images: int = 1

    mode = "text_to_image"

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain JSON values; images are left out."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in IMAGE_FIELDS}
        return {"mode": self.mode, **values}


@dataclass
class ImageToImageRequest(TextToImageRequest):
    """Text-to-image plus an init image and how much of it to repaint."""

    image: Image.Image | None = field(default=None, repr=False)
    strength: float = 0.7

    mode = "image_to_image"


@dataclass
class IPAdapterRequest(TextToImageRequest):
    """Generation guided by a reference image, optionally starting from an init image."""

    ip_adapter_image: Image.Image | None = field(default=None, repr=False)
    ip_adapter_scale: float = 0.5
    image: Image.Image | None = field(default=None, repr=False)
    strength: float = 0.7
    num_inference_steps: int = 25
    guidance_scale: float = 6.5

    mode = "ip_adapter"


REQUEST_TYPES = {cls.mode: cls for cls in (TextToImageRequest, ImageToImageRequest, IPAdapterRequest)}
Request = TextToImageRequest  # the base every request type extends


@dataclass
class GeneratedImage:
    """One image and the exact parameters that made it (its own seed included)."""

    image: Image.Image
    seed: int
    parameters: dict[str, Any]


@dataclass
class GenerationResult:
    """The images of one request; `stopped` is set (and `images` empty) when the user stopped it."""

    images: list[GeneratedImage]
    request: TextToImageRequest
    warnings: list[str] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0


def request_from_dict(values: dict[str, Any]) -> TextToImageRequest:
    """Build the right request type from saved parameters, ignoring unknown keys."""
    mode = values.get("mode", "text_to_image")
    if mode not in REQUEST_TYPES:
        raise ValidationError("mode", f"must be one of {sorted(REQUEST_TYPES)}, got {mode!r}")
    cls = REQUEST_TYPES[mode]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValidationError(name, f"must be a whole number from {low} to {high}, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ValidationError(name, f"must be a whole number from {low} to {high}, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise ValidationError(name, f"must be from {low} to {high}, got {number}")
    return number


def _number(name: str, value: Any, low: float, high: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValidationError(name, f"must be a number from {low} to {high}, got {value!r}")
    number = float(value)
    if number > high or number < low or (low_open and number == low):
        bound = f"above {low}" if low_open else f"from {low}"
        raise ValidationError(name, f"must be {bound} to {high}, got {number:g}")
    return number


def _text(name: str, value: Any, limits: Limits) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(name, f"must be text, got {type(value).__name__}")
    if len(value) > limits.max_prompt_chars:
        raise ValidationError(name, f"is {len(value)} characters long; at most {limits.max_prompt_chars} allowed")
    return value


def _size(name: str, value: Any, limits: Limits) -> int:
    number = _integer(name, value, limits.min_size, limits.max_size)
    if number % 8:
        raise ValidationError(name, f"must be a multiple of 8 (e.g. {number - number % 8}), got {number}")
    return number


def _seed(value: Any) -> int | None:
    if value is None or (not isinstance(value, bool) and isinstance(value, numbers.Real) and value == -1):
        return None
    return _integer("seed", value, 0, MAX_SEED) if not isinstance(value, str) else _seed_text(value)


def _seed_text(value: str) -> int | None:
    try:
        return _seed(int(value.strip()))
    except ValueError:
        raise ValidationError("seed", f"must be -1 (random) or a whole number from 0 to {MAX_SEED}, got {value!r}")


def _image(name: str, value: Any, limits: Limits, required: bool) -> Image.Image | None:
    if value is None:
        if required:
            raise ValidationError(name, "an image is required")
        return None
    if not isinstance(value, Image.Image):
        raise ValidationError(name, f"must be an image, got {type(value).__name__}")
    if value.width * value.height > limits.max_image_pixels:
        raise ValidationError(name, f"is {value.width}x{value.height}; at most {limits.max_image_pixels:,} pixels")
    return value


def validate(request: TextToImageRequest, limits: Limits) -> TextToImageRequest:
    """Check every field and return a normalised copy; raise ValidationError on the first bad one."""
    if not isinstance(request, TextToImageRequest):
        raise ValidationError("request", f"unknown request type {type(request).__name__}")
    changes: dict[str, Any] = {
        "prompt": _text("prompt", request.prompt, limits),
        "negative_prompt": _text("negative_prompt", request.negative_prompt, limits),
        "width": _size("width", request.width, limits),
        "height": _size("height", request.height, limits),
        "num_inference_steps": _integer("num_inference_steps", request.num_inference_steps, 1, limits.max_steps),
        "guidance_scale": _number("guidance_scale", request.guidance_scale, 0.0, limits.max_guidance),
        "seed": _seed(request.seed),
        "num_images": _integer("num_images", request.num_images, 1, limits.max_images),
    }
    if request.scheduler not in SCHEDULER_NAMES:
        raise ValidationError("scheduler", f"must be one of {', '.join(SCHEDULER_NAMES)}; got {request.scheduler!r}")
    if isinstance(request, (ImageToImageRequest, IPAdapterRequest)):
        changes["image"] = _image("image", request.image, limits, required=request.mode == "image_to_image")
        changes["strength"] = _number("strength", request.strength, 0.0, 1.0, low_open=True)
        if changes["image"] is not None and int(changes["num_inference_steps"] * changes["strength"]) < 1:
            raise ValidationError("strength", "times num_inference_steps must give at least one step; raise either")
    if isinstance(request, IPAdapterRequest):
        changes["ip_adapter_image"] = _image("ip_adapter_image", request.ip_adapter_image, limits, required=True)
        changes["ip_adapter_scale"] = _number("ip_adapter_scale", request.ip_adapter_scale, 0.0, 2.0)
    if request.mode == "text_to_image" and not changes["prompt"].strip():
        raise ValidationError("prompt", "is empty; describe the image you want")
    return dataclasses.replace(request, **changes)


def concrete_seed(seed: int | None) -> int:
    """The seed to use: the given one, or a fresh random one in [0, 2**32-1]."""
    return random.randint(0, MAX_SEED) if seed is None else seed
