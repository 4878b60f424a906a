"""Validate a request before any model work: its fields by the schema's rules, then its images and what parts need."""

from __future__ import annotations

from typing import Any

from PIL import Image

from kolors_app.core.config import Limits
from kolors_app.core.creative_fields import HiresFix, LoraChoice, hires_target_size
from kolors_app.core.errors import ValidationError
from kolors_app.core.prompt_syntax import check_choice_syntax
from kolors_app.core.request import (COMMON_FIELDS, CONTROL_TYPES, MAX_CONTROL_UNITS, OUTPAINT_SIDES, ControlUnit,
                                     GenerationRequest, InitImage, Inpaint, Reference, control_name, control_values,
                                     inpaint_values)
from kolors_app.core.schema import read_flat_parameters, request_from_flat


def validate(request: GenerationRequest, limits: Limits) -> GenerationRequest:
    """A checked, normalised copy of the request; raise ValidationError on the first bad field."""
    if not isinstance(request, GenerationRequest):
        raise ValidationError("request", f"unknown request type {type(request).__name__}", "wrong_type")
    for name, part, kind in (("init", request.init, InitImage), ("inpaint", request.inpaint, Inpaint),
                             ("reference", request.reference, Reference)):
        if part is not None and not isinstance(part, kind):
            raise ValidationError(name, f"must be a {kind.__name__}, got {type(part).__name__}", "wrong_type")
    if request.inpaint is not None and request.init is None:
        raise ValidationError("image", "an image is required to inpaint", "required")
    units = _control_units(request.controls)
    checked = request_from_flat(read_flat_parameters(request_values(request, units), limits))
    if checked.init is not None:
        checked.init.image = _image("image", request.init.image, limits, required=True)
        if int(checked.num_inference_steps * checked.init.strength) < 1:
            raise ValidationError("strength", "times num_inference_steps must give at least one step; raise either",
                                  "out_of_range", {"min": 1 / checked.num_inference_steps, "max": 1.0})
    if checked.inpaint is not None:
        checked.inpaint.mask = _mask(checked.inpaint, request.inpaint.mask, checked.init.image, limits)
    if checked.reference is not None:
        checked.reference.image = _image("ip_adapter_image", request.reference.image, limits, required=True)
    _add_unit_images(checked.controls, units, limits)
    if checked.hires is not None:
        _check_hires(checked, limits)
    for name in ("prompt", "negative_prompt"):
        check_choice_syntax(getattr(checked, name), name)
    if checked.mode == "text_to_image" and not checked.prompt.strip():
        raise ValidationError("prompt", "is empty; describe the image you want", "required")
    return checked


def request_values(request: GenerationRequest, units: list[ControlUnit]) -> dict[str, Any]:
    """A request's fields as flat values for the schema, as they are: the schema names what is wrong."""
    values: dict[str, Any] = {"mode": request.mode, **{name: getattr(request, name) for name in COMMON_FIELDS}}
    if isinstance(values["seed"], str):  # a seed typed into a text box
        values["seed"] = _seed_from_text(values["seed"])
    if request.init is not None:
        values["strength"] = request.init.strength
    if request.reference is not None:
        values["ip_adapter_scale"] = request.reference.scale
    if request.inpaint is not None:
        outpaint = request.inpaint.outpaint
        if not isinstance(outpaint, (tuple, list)) or len(outpaint) != len(OUTPAINT_SIDES):
            raise ValidationError("outpaint", f"must give four numbers ({', '.join(OUTPAINT_SIDES)})", "wrong_type")
        values.update(inpaint_values(request.inpaint))
    for index, unit in enumerate(units):
        values.update(control_values(unit, index))
    values["styles"] = list(request.styles) if isinstance(request.styles, tuple) else request.styles or []
    loras = request.loras or []
    values["loras"] = ([choice.to_dict() if isinstance(choice, LoraChoice) else choice for choice in loras]
                       if isinstance(loras, (list, tuple)) else loras)
    values.update(_hires_values(request.hires))
    return values


def _seed_from_text(text: str) -> int | str:
    try:
        return int(text.strip())
    except ValueError:
        return text  # refused by the schema's seed rule, with its message


def _hires_values(hires: Any) -> dict[str, Any]:
    """The hires fix as flat values: a HiresFix, never a dict that may hold anything."""
    if hires is None or hires is False:
        return {}
    if not isinstance(hires, HiresFix):
        raise ValidationError("hires", f"must be a HiresFix (upscale, upscaler, steps, denoising_strength), "
                                       f"got {type(hires).__name__}", "wrong_type")
    return hires.flat_values()


def validate_controls(units: Any, limits: Limits) -> list[ControlUnit]:
    """Control units alone (a unit's map preview), checked as in a request: control_type, control_scale_2, ..."""
    units = _control_units(units)
    values: dict[str, Any] = {}
    for index, unit in enumerate(units):
        values.update(control_values(unit, index))
    checked = request_from_flat(read_flat_parameters(values, limits)).controls
    _add_unit_images(checked, units, limits)
    return checked


def _add_unit_images(checked: list[ControlUnit], units: list[ControlUnit], limits: Limits) -> None:
    """Give the checked units the images of the units given (each one needs its image)."""
    if len(checked) != len(units):  # a unit typed "none" vanishes from the flat parameters
        index = next(index for index, unit in enumerate(units) if unit.type not in CONTROL_TYPES)
        raise ValidationError(control_name("type", index), f"must be one of {', '.join(CONTROL_TYPES)}; "
                                                           f"got {units[index].type!r}", "unknown_choice",
                              list(CONTROL_TYPES))
    for index, (unit, given) in enumerate(zip(checked, units)):
        unit.image = _image(control_name("image", index), given.image, limits, required=True)


def _control_units(units: Any) -> list[ControlUnit]:
    """Up to three ControlUnit parts (their fields are checked as control_scale, control_scale_2, ...)."""
    if not isinstance(units, (list, tuple)):
        raise ValidationError("controls", f"must be a list of control units, got {type(units).__name__}", "wrong_type")
    if len(units) > MAX_CONTROL_UNITS:
        raise ValidationError("controls", f"at most {MAX_CONTROL_UNITS} control units at once, got {len(units)}",
                              "too_many", {"max_items": MAX_CONTROL_UNITS})
    for index, unit in enumerate(units):
        if not isinstance(unit, ControlUnit):
            raise ValidationError(control_name("type", index), f"must be a ControlUnit, got {type(unit).__name__}",
                                  "wrong_type")
    return list(units)


def _image(name: str, value: Any, limits: Limits, required: bool) -> Image.Image | None:
    if value is None:
        if required:
            raise ValidationError(name, "an image is required", "required")
        return None
    if not isinstance(value, Image.Image):
        raise ValidationError(name, f"must be an image, got {type(value).__name__}", "wrong_type")
    if value.width * value.height > limits.max_image_pixels:
        raise ValidationError(name, f"is {value.width}x{value.height}; at most {limits.max_image_pixels:,} pixels",
                              "out_of_range", {"max_pixels": limits.max_image_pixels})
    return value


def _mask(inpaint: Inpaint, mask: Any, image: Image.Image, limits: Limits) -> Image.Image | None:
    """The mask: the size of the image, and needed unless the canvas is only outpainted; the canvas within limits."""
    sides = inpaint.outpaint
    width, height = image.width + sides[0] + sides[1], image.height + sides[2] + sides[3]
    if width > limits.max_size * 2 or height > limits.max_size * 2 or width * height > limits.max_image_pixels:
        raise ValidationError("outpaint_" + ("left" if width > height else "up"),
                              f"makes the canvas {width}x{height}, above the size limits", "out_of_range",
                              {"max_side": limits.max_size * 2, "max_pixels": limits.max_image_pixels})
    mask = _image("mask", mask, limits, required=not any(sides))
    if mask is not None and mask.size != image.size:
        raise ValidationError("mask", f"is {mask.width}x{mask.height}; it must be the size of image "
                                      f"({image.width}x{image.height})", "invalid")
    return mask


def _check_hires(request: GenerationRequest, limits: Limits) -> None:
    """The hires fix on a text-only base, its size within the limits, and at least one step in its second pass."""
    if request.init is not None or request.inpaint is not None:
        raise ValidationError("hires", "the hires fix applies to text-to-image (and IP-Adapter without an init "
                                       "image); use the Upscale action for an existing image")
    fix = request.hires
    hires_target_size(request.width, request.height, fix.upscale, limits)
    if int((fix.steps or request.num_inference_steps) * fix.denoising_strength) < 1:
        raise ValidationError("hires_denoising_strength", "times the hires steps must give at least one step",
                              "out_of_range")
