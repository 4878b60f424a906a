"""The generation request, its parts, results, and their validation: every bad input is refused here first."""

from __future__ import annotations

import dataclasses
import math
import numbers
import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from kolors_app.core.config import Limits
from kolors_app.core.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES

MAX_SEED = 2**32 - 1
MODEL_NAME = "Kolors"
MODES = ("text_to_image", "image_to_image", "ip_adapter", "inpaint")
CONTROL_TYPES = ("canny", "depth", "pose")
MAX_CONTROL_UNITS = 3
INPAINT_AREAS = ("whole", "masked")
INPAINT_MODELS = ("inpainting", "base")
OUTPAINT_SIDES = ("left", "right", "up", "down")
# Settings a mode starts from when a saved or API request leaves them out (upstream's recommendations).
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "text_to_image": {"num_inference_steps": 50, "guidance_scale": 5.0},
    "image_to_image": {"num_inference_steps": 50, "guidance_scale": 5.0, "strength": 0.7},
    "ip_adapter": {"num_inference_steps": 25, "guidance_scale": 6.5, "strength": 0.7},
    "inpaint": {"num_inference_steps": 25, "guidance_scale": 6.0, "strength": 0.999},
}


class ValidationError(ValueError):
    """A request field is out of range; the message names the field and what is allowed."""

    def __init__(self, field_name: str, message: str, code: str = "invalid", allowed: Any = None):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.code = code  # what is wrong, for an entrance to render: "invalid", "over_budget", ...
        self.allowed = allowed  # the allowed values or range, as data

    def as_data(self) -> dict[str, Any]:
        """The refusal as plain data: field, code, the allowed values or range, and the English message."""
        return {"field": self.field, "code": self.code, "allowed": self.allowed, "message": str(self)}


@dataclass
class InitImage:
    """Start from this image instead of noise; `strength` (0..1] says how much of it is repainted."""

    image: Image.Image | None = field(default=None, repr=False)
    strength: float = 0.7


@dataclass
class Inpaint:
    """Repaint the init image only where the mask is white; needs `init`. Outpainting extends the canvas first.

    `area`: "whole" picture, or "masked" (crop around the mask plus `padding`, generate, paste back).
    `model`: "inpainting" (the 9-channel Kolors-Inpainting U-Net) or "base" (the base U-Net, latents
    blended outside the mask). `outpaint`: pixels added on the left, right, top and bottom (the mask then
    covers the new area too).
    """

    mask: Image.Image | None = field(default=None, repr=False)
    mask_blur: int = 4
    area: str = "whole"
    padding: int = 32
    keep_unmasked: bool = True
    model: str = "inpainting"
    outpaint: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class Reference:
    """A reference image for IP-Adapter Plus and how strongly it steers the result."""

    image: Image.Image | None = field(default=None, repr=False)
    scale: float = 0.5


@dataclass
class ControlUnit:
    """One ControlNet: its type, its image (a photo, or with preprocess=False the map itself) and its strength.

    `start`/`end` are the fractions of the steps it acts on; the thresholds are canny's.
    """

    type: str = "canny"
    image: Image.Image | None = field(default=None, repr=False)
    preprocess: bool = True
    scale: float = 0.7
    start: float = 0.0
    end: float = 0.9
    low_threshold: int = 100
    high_threshold: int = 200


@dataclass
class GenerationRequest:
    """One generation, made of parts; each part is optional and validated on its own.

    - the common settings: prompt ... num_images;
    - the base: text only (init None), an init image (`init`), or an init image and a mask (`init` + `inpaint`);
    - `reference`: an IP-Adapter reference image;
    - `controls`: up to three ControlNet units.

    `mode` (derived: inpaint > ip_adapter > image_to_image > text_to_image) names the tab and is recorded
    in metadata and history. generation.py turns the parts into one diffusers call.
    """

    prompt: str = ""
    negative_prompt: str = ""
    width: int = 1024
    height: int = 1024
    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    scheduler: str = DEFAULT_SCHEDULER
    seed: int | None = None
    num_images: int = 1
    init: InitImage | None = None
    inpaint: Inpaint | None = None
    reference: Reference | None = None
    controls: list[ControlUnit] = field(default_factory=list)
    # Creative part (kolors_app/creative/part.py): LoRAs [{name, weight}], style names, hires fix settings.
    loras: list = field(default_factory=list)
    styles: list = field(default_factory=list)
    hires: Any = None

    @property
    def mode(self) -> str:
        """The mode this request is shown and recorded as."""
        if self.inpaint is not None:
            return "inpaint"
        if self.reference is not None:
            return "ip_adapter"
        return "image_to_image" if self.init is not None else "text_to_image"

    @property
    def init_image(self) -> Image.Image | None:
        """The init image, or None for a text-only base."""
        return self.init.image if self.init is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The parameters as flat JSON values (the API's names); images are left out."""
        values: dict[str, Any] = {"mode": self.mode}
        values.update({name: getattr(self, name) for name in COMMON_FIELDS})
        if self.init is not None:
            values["strength"] = self.init.strength
        if self.reference is not None:
            values["ip_adapter_scale"] = self.reference.scale
        if self.inpaint is not None:
            values.update(inpaint_values(self.inpaint))
        for index, unit in enumerate(self.controls):
            values.update(control_values(unit, index))
        from kolors_app.creative.part import request_values

        values.update(request_values(self))
        return values


COMMON_FIELDS = ("prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale",
                 "scheduler", "seed", "num_images")
COMMON_KINDS = {"prompt": "str", "negative_prompt": "str", "width": "int", "height": "int",
                "num_inference_steps": "int", "guidance_scale": "float", "scheduler": "str", "seed": "int | None",
                "num_images": "int"}
# Inpaint attribute -> flat parameter name (and the API's), with its JSON kind.
INPAINT_NAMES = {"mask_blur": ("mask_blur", "int"), "area": ("inpaint_area", "str"),
                 "padding": ("inpaint_padding", "int"), "keep_unmasked": ("keep_unmasked", "bool"),
                 "model": ("inpaint_model", "str")}
CONTROL_KINDS = {"type": "str", "preprocess": "bool", "scale": "float", "start": "float", "end": "float",
                 "low_threshold": "int", "high_threshold": "int"}


def control_name(attribute: str, index: int) -> str:
    """The flat parameter name of a unit's attribute: control_scale, control_scale_2, control_scale_3."""
    return f"control_{attribute}" + (f"_{index + 1}" if index else "")


def inpaint_values(inpaint: Inpaint) -> dict[str, Any]:
    """The inpaint part as flat parameters."""
    values = {name: getattr(inpaint, attribute) for attribute, (name, _kind) in INPAINT_NAMES.items()}
    values.update({f"outpaint_{side}": pixels for side, pixels in zip(OUTPAINT_SIDES, inpaint.outpaint)})
    return values


def control_values(unit: ControlUnit, index: int) -> dict[str, Any]:
    """One control unit as flat parameters."""
    return {control_name(attribute, index): getattr(unit, attribute) for attribute in CONTROL_KINDS}


def parameter_kinds(mode: str) -> dict[str, str]:
    """Flat parameter name -> JSON kind ("str", "int", "int | None", "float", "bool") for a mode's dict."""
    kinds = dict(COMMON_KINDS)
    if mode != "text_to_image":
        kinds["strength"] = "float"
    if mode == "ip_adapter":
        kinds["ip_adapter_scale"] = "float"
    if mode == "inpaint":
        kinds.update(dict(INPAINT_NAMES.values()))
        kinds.update({f"outpaint_{side}": "int" for side in OUTPAINT_SIDES})
    for index in range(MAX_CONTROL_UNITS):
        kinds.update({control_name(attribute, index): kind for attribute, kind in CONTROL_KINDS.items()})
    return kinds


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
    request: GenerationRequest
    warnings: list[str] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0
    # Maps the control units were given, one per unit (what the preprocessors made), for the UI to show.
    control_maps: list[Image.Image] = field(default_factory=list)


def request_from_dict(values: dict[str, Any]) -> GenerationRequest:
    """Build a request from flat saved parameters, ignoring unknown keys; images stay None (give them again)."""
    mode = values.get("mode", "text_to_image")
    if mode not in MODES:
        raise ValidationError("mode", f"must be one of {sorted(MODES)}, got {mode!r}")
    given = {**MODE_DEFAULTS[mode], **values}
    request = GenerationRequest(**{name: given[name] for name in COMMON_FIELDS if name in given})
    if mode != "text_to_image" and (mode != "ip_adapter" or "strength" in values):
        request.init = InitImage(strength=given["strength"])
    if mode == "ip_adapter":
        request.reference = Reference(**({"scale": given["ip_adapter_scale"]} if "ip_adapter_scale" in given else {}))
    if mode == "inpaint":
        request.inpaint = Inpaint(**{attribute: given[name] for attribute, (name, _kind) in INPAINT_NAMES.items()
                                     if name in given})
        request.inpaint.outpaint = tuple(given.get(f"outpaint_{side}", 0) for side in OUTPAINT_SIDES)
    for index in range(MAX_CONTROL_UNITS):
        if given.get(control_name("type", index), "none") in (None, "none"):
            continue
        request.controls.append(ControlUnit(**{attribute: given[control_name(attribute, index)]
                                               for attribute in CONTROL_KINDS if control_name(attribute, index) in given}))
    from kolors_app.creative.part import read_values

    read_values(request, given)
    return request


def images_needed(parameters: dict[str, Any]) -> list[str]:
    """The image parameters a saved request needs given again (images are never stored in the parameters)."""
    request = request_from_dict(parameters)
    needed = ["image"] if request.init is not None else []
    if request.reference is not None:
        needed.append("ip_adapter_image")
    if request.inpaint is not None and not any(request.inpaint.outpaint):
        needed.append("mask")
    return needed + [control_name("image", index) for index in range(len(request.controls))]


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


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(name, f"must be true or false, got {value!r}")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValidationError(name, f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def _text(name: str, value: Any, limits: Limits) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(name, f"must be text, got {type(value).__name__}")
    if len(value) > limits.max_prompt_chars:
        raise ValidationError(name, f"is {len(value)} characters long; at most {limits.max_prompt_chars} allowed")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate: the tokenizer would fail mid-run
            raise ValidationError(name, f"holds an invalid character at position {error.start}") from None
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


def _part(name: str, value: Any, cls: type) -> None:
    if value is not None and not isinstance(value, cls):
        raise ValidationError(name, f"must be a {cls.__name__}, got {type(value).__name__}")


def validate(request: GenerationRequest, limits: Limits) -> GenerationRequest:
    """Check every field of every part and return a normalised copy; raise ValidationError on the first bad one."""
    if not isinstance(request, GenerationRequest):
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
    _part("init", request.init, InitImage)
    _part("inpaint", request.inpaint, Inpaint)
    _part("reference", request.reference, Reference)
    if request.inpaint is not None and request.init is None:
        raise ValidationError("image", "an image is required to inpaint")
    if request.init is not None:
        changes["init"] = validate_init(request.init, changes["num_inference_steps"], limits)
    if request.inpaint is not None:
        changes["inpaint"] = validate_inpaint(request.inpaint, changes["init"].image, limits)
    if request.reference is not None:
        changes["reference"] = Reference(_image("ip_adapter_image", request.reference.image, limits, required=True),
                                         _number("ip_adapter_scale", request.reference.scale, 0.0, 2.0))
    changes["controls"] = validate_controls(request.controls, limits)
    from kolors_app.creative.part import validate_part

    changes.update(validate_part(request, limits))
    if request.mode == "text_to_image" and not changes["prompt"].strip():
        raise ValidationError("prompt", "is empty; describe the image you want")
    return dataclasses.replace(request, **changes)


def validate_init(init: InitImage, steps: int, limits: Limits) -> InitImage:
    """The init image part: an image, and a strength that leaves at least one step."""
    image = _image("image", init.image, limits, required=True)
    strength = _number("strength", init.strength, 0.0, 1.0, low_open=True)
    if int(steps * strength) < 1:
        raise ValidationError("strength", "times num_inference_steps must give at least one step; raise either")
    return InitImage(image, strength)


def validate_inpaint(inpaint: Inpaint, image: Image.Image, limits: Limits) -> Inpaint:
    """The mask part: a mask the size of the image (unless outpainting alone), blur, area, model, outpainted sides."""
    outpaint = inpaint.outpaint
    if not isinstance(outpaint, (tuple, list)) or len(outpaint) != len(OUTPAINT_SIDES):
        raise ValidationError("outpaint", f"must give four numbers ({', '.join(OUTPAINT_SIDES)})")
    sides = tuple(_integer(f"outpaint_{side}", pixels, 0, limits.max_size)
                  for side, pixels in zip(OUTPAINT_SIDES, outpaint))
    width, height = image.width + sides[0] + sides[1], image.height + sides[2] + sides[3]
    if width > limits.max_size * 2 or height > limits.max_size * 2 or width * height > limits.max_image_pixels:
        raise ValidationError("outpaint_" + ("left" if width > height else "up"),
                              f"makes the canvas {width}x{height}, above the size limits")
    mask = _image("mask", inpaint.mask, limits, required=not any(sides))
    if mask is not None and mask.size != image.size:
        raise ValidationError("mask", f"is {mask.width}x{mask.height}; it must be the size of image "
                                      f"({image.width}x{image.height})")
    return Inpaint(
        mask=mask,
        mask_blur=_integer("mask_blur", inpaint.mask_blur, 0, 64),
        area=_choice("inpaint_area", inpaint.area, INPAINT_AREAS),
        padding=_integer("inpaint_padding", inpaint.padding, 0, 256),
        keep_unmasked=_flag("keep_unmasked", inpaint.keep_unmasked),
        model=_choice("inpaint_model", inpaint.model, INPAINT_MODELS),
        outpaint=sides,
    )


def validate_controls(units: Any, limits: Limits) -> list[ControlUnit]:
    """Up to three control units, each checked field by field (named control_scale, control_scale_2, ...)."""
    if not isinstance(units, (list, tuple)):
        raise ValidationError("controls", f"must be a list of control units, got {type(units).__name__}")
    if len(units) > MAX_CONTROL_UNITS:
        raise ValidationError("controls", f"at most {MAX_CONTROL_UNITS} control units at once, got {len(units)}")
    checked = []
    for index, unit in enumerate(units):
        if not isinstance(unit, ControlUnit):
            raise ValidationError(control_name("type", index), f"must be a ControlUnit, got {type(unit).__name__}")
        name = lambda attribute: control_name(attribute, index)  # noqa: E731
        start = _number(name("start"), unit.start, 0.0, 1.0)
        end = _number(name("end"), unit.end, 0.0, 1.0)
        if end <= start:
            raise ValidationError(name("end"), f"must be above {name('start')} ({start:g}), got {end:g}")
        low = _integer(name("low_threshold"), unit.low_threshold, 0, 255)
        high = _integer(name("high_threshold"), unit.high_threshold, 0, 255)
        if high < low:
            raise ValidationError(name("high_threshold"), f"must be at least {name('low_threshold')} ({low}), got {high}")
        checked.append(ControlUnit(
            type=_choice(name("type"), unit.type, CONTROL_TYPES),
            image=_image(name("image"), unit.image, limits, required=True),
            preprocess=_flag(name("preprocess"), unit.preprocess),
            scale=_number(name("scale"), unit.scale, 0.0, 2.0),
            start=start, end=end, low_threshold=low, high_threshold=high))
    return checked


def concrete_seed(seed: int | None) -> int:
    """The seed to use: the given one, or a fresh random one in [0, 2**32-1]."""
    return random.randint(0, MAX_SEED) if seed is None else seed
