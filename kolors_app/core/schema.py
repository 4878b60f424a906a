"""One schema for the flat parameters: every entrance, history import, the PNG's JSON chunk and restore read them here.

The flat parameters are what GenerationRequest.to_dict() writes and what an image records beyond that
(the model, the prompts as they ran). Each field follows its rule in core/schema_rules.py; a refusal is the
app's ValidationError naming the flat field (`control_scale_2`, `loras.0.weight`, `hires_steps`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, TypeAdapter, create_model, model_validator
from pydantic import ValidationError as PydanticError

from kolors_app.core.config import Limits
from kolors_app.core.creative_fields import HIRES_KEYS, HiresFix, LoraChoice
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import (COMMON_FIELDS, CONTROL_ATTRIBUTES, INPAINT_NAMES, MAX_CONTROL_UNITS, MODE_DEFAULTS,
                                     MODES, OUTPAINT_SIDES, ControlUnit, GenerationRequest, InitImage, Inpaint,
                                     Reference, control_name)
from kolors_app.core.schema_rules import (Choice, Flag, LoraHash, LoraName, LoraWeight, Number, Seed, StyleNames,
                                          Text, WholeNumber, lora_item, lora_list, unique_names)

CREATIVE_NAMES = ("loras", "styles", *HIRES_KEYS.values())
# Recorded with each image and accepted back (an image's JSON may be posted again); they follow from the rest.
RECORDED_NAMES = ("model", "final_prompt", "final_negative_prompt")
# Pydantic's own error types -> the app's codes (the rules raise the app's codes themselves).
PYDANTIC_CODES = {"missing": "required", "extra_forbidden": "unknown_field"}


class LoraItem(BaseModel):
    """One LoRA as the flat parameters hold it: {name, weight} and, in an image's record, its hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: LoraName
    weight: LoraWeight = 1.0
    hash: LoraHash = None

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, value: Any) -> Any:
        return lora_item(value)


LoraList = Annotated[list[LoraItem], BeforeValidator(lora_list), AfterValidator(unique_names)]


class _FlatFields(BaseModel):
    """The fields every mode shares; None means "not given" (the request's defaults apply)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    mode: Choice = "text_to_image"
    prompt: Text = None
    negative_prompt: Text = None
    width: WholeNumber = None
    height: WholeNumber = None
    num_inference_steps: WholeNumber = None
    guidance_scale: Number = None
    scheduler: Choice = None
    seed: Seed = None
    num_images: WholeNumber = None
    strength: Number = None
    ip_adapter_scale: Number = None
    mask_blur: WholeNumber = None
    inpaint_area: Choice = None
    inpaint_padding: WholeNumber = None
    keep_unmasked: Flag = None
    inpaint_model: Choice = None
    outpaint_left: WholeNumber = None
    outpaint_right: WholeNumber = None
    outpaint_up: WholeNumber = None
    outpaint_down: WholeNumber = None
    loras: LoraList = None
    styles: StyleNames = None
    hires_upscale: Number = None
    hires_steps: WholeNumber = None
    hires_upscaler: Text = None
    hires_denoising_strength: Number = None
    model: Text = None
    final_prompt: Text = None
    final_negative_prompt: Text = None

    def given(self) -> dict[str, Any]:
        """The fields that were given, as plain JSON values."""
        values = {name: getattr(self, name) for name in type(self).model_fields if name in self.model_fields_set}
        if "loras" in values:
            values["loras"] = [LoraChoice(item.name, item.weight, item.hash).to_dict() for item in values["loras"]]
        return values


_UNIT_FIELDS = {"type": Choice, "preprocess": Flag, "scale": Number, "start": Number, "end": Number,
                "low_threshold": WholeNumber, "high_threshold": WholeNumber}
FlatParameters = create_model(
    "FlatParameters", __base__=_FlatFields, __module__=__name__,
    __doc__="The flat parameters of one request or image; control_* for up to three ControlNet units.",
    **{control_name(attribute, index): (kind, None) for index in range(MAX_CONTROL_UNITS)
       for attribute, kind in _UNIT_FIELDS.items()})
_LORAS = TypeAdapter(LoraList)


def parameter_names(mode: str) -> tuple[str, ...]:
    """The flat parameters a request of this mode takes (images aside), the recorded ones included."""
    names = ["mode", *COMMON_FIELDS]
    if mode != "text_to_image":
        names.append("strength")
    if mode in ("ip_adapter", "inpaint"):  # inpainting on the base U-Net takes a reference too
        names.append("ip_adapter_scale")
    if mode == "inpaint":
        names += [*INPAINT_NAMES.values(), *(f"outpaint_{side}" for side in OUTPAINT_SIDES)]
    names += [control_name(attribute, index) for index in range(MAX_CONTROL_UNITS) for attribute in CONTROL_ATTRIBUTES]
    return (*names, *CREATIVE_NAMES, *RECORDED_NAMES)


def app_error(error: PydanticError, field_prefix: str = "") -> ValidationError:
    """The first of pydantic's errors as the app's: the flat field (after the prefix), code, message, allowed."""
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"])
    name = ".".join(part for part in (field_prefix, field) if part) or "parameters"
    context = first.get("ctx") or {}
    if "message" in context:
        return ValidationError(name, context["message"], first["type"], context.get("allowed"))
    if first["type"] == "extra_forbidden":
        return ValidationError(name, "is not a field of a LoRA; the fields are name, weight, hash", "unknown_field",
                               ["name", "weight", "hash"])
    if first["type"] == "missing":
        return ValidationError(name, "is required", "required")
    message = first["msg"][:1].lower() + first["msg"][1:]
    return ValidationError(name, message, PYDANTIC_CODES.get(first["type"], "wrong_type"))


def read_flat_parameters(values: Any, limits: Limits = Limits(), *, field_prefix: str = "",
                         check_ranges: bool = True) -> FlatParameters:
    """The flat parameters of a dict from outside, each field checked by its rule; keys not of its mode are dropped.

    `check_ranges=False` reads a record (an image's JSON, a history entry, a restore): types only, since
    its values were right where it was made; a request is checked in full before any model work.
    """
    if not isinstance(values, dict):
        raise ValidationError(field_prefix or "parameters", f"must be an object, got {type(values).__name__}",
                              "wrong_type")
    mode = values.get("mode", "text_to_image")
    names = parameter_names(mode) if isinstance(mode, str) and mode in MODES else ("mode",)
    given = {name: values[name] for name in names if name in values}
    given["mode"] = mode
    try:
        flat = FlatParameters.model_validate(given, context={"limits": limits, "check_ranges": check_ranges})
    except PydanticError as error:
        raise app_error(error, field_prefix) from None
    if check_ranges:
        _check_units(flat, field_prefix)
    return flat


def _check_units(flat: FlatParameters, field_prefix: str) -> None:
    """What one unit's fields must hold together: end after start, the high threshold at least the low one."""
    for index in range(MAX_CONTROL_UNITS):
        def name(attribute: str, index: int = index) -> str:
            return control_name(attribute, index)

        if getattr(flat, name("type")) in (None, "none"):
            continue

        def named(attribute: str, index: int = index) -> str:
            return ".".join(part for part in (field_prefix, control_name(attribute, index)) if part)

        start, end = getattr(flat, name("start")), getattr(flat, name("end"))
        if start is not None and end is not None and end <= start:
            raise ValidationError(named("end"), f"must be above {name('start')} ({start:g}), got {end:g}",
                                  "out_of_range", {"min": start, "max": 1.0, "min_exclusive": True})
        low, high = getattr(flat, name("low_threshold")), getattr(flat, name("high_threshold"))
        if low is not None and high is not None and high < low:
            raise ValidationError(named("high_threshold"), f"must be at least {name('low_threshold')} ({low}), "
                                                           f"got {high}", "out_of_range", {"min": low, "max": 255})


def request_from_flat(flat: FlatParameters) -> GenerationRequest:
    """The request that flat parameters describe; the mode's defaults fill what they leave out, images stay None."""
    given = flat.given()
    mode = flat.mode
    values = {**MODE_DEFAULTS[mode], **given}
    request = GenerationRequest(**{name: values[name] for name in COMMON_FIELDS if name in values})
    if mode != "text_to_image" and (mode != "ip_adapter" or "strength" in given):
        request.init = InitImage(strength=values["strength"])
    if mode == "ip_adapter" or (mode == "inpaint" and "ip_adapter_scale" in given):
        request.reference = Reference(**({"scale": values["ip_adapter_scale"]} if "ip_adapter_scale" in values else {}))
    if mode == "inpaint":
        request.inpaint = Inpaint(**{attribute: values[name] for attribute, name in INPAINT_NAMES.items()
                                     if name in values})
        request.inpaint.outpaint = tuple(values.get(f"outpaint_{side}", 0) for side in OUTPAINT_SIDES)
    for index in range(MAX_CONTROL_UNITS):
        if values.get(control_name("type", index), "none") == "none":
            continue
        request.controls.append(ControlUnit(**{attribute: values[control_name(attribute, index)]
                                               for attribute in CONTROL_ATTRIBUTES
                                               if control_name(attribute, index) in values}))
    request.styles = list(values.get("styles", []))
    request.loras = [LoraChoice(**item) for item in values.get("loras", [])]
    if "hires_upscale" in values:
        request.hires = HiresFix(**{key: values[name] for key, name in HIRES_KEYS.items() if name in values})
    return request


def request_from_dict(values: Any, limits: Limits = Limits()) -> GenerationRequest:
    """A request from flat parameters, every field checked; unknown keys are ignored, images stay None."""
    return request_from_flat(read_flat_parameters(values, limits))


def clean_parameters(values: Any, field_name: str = "parameters", limits: Limits = Limits()) -> dict[str, Any]:
    """A record's flat parameters with their types checked; unknown keys and the prompts as they ran are dropped."""
    given = read_flat_parameters(values, limits, field_prefix=field_name, check_ranges=False).given()
    return {name: value for name, value in given.items() if name not in ("final_prompt", "final_negative_prompt")}


def images_needed(parameters: dict[str, Any]) -> list[str]:
    """The image parameters a saved request needs given again (images are never stored in the parameters)."""
    request = request_from_flat(read_flat_parameters(parameters, check_ranges=False))
    needed = ["image"] if request.init is not None else []
    if request.reference is not None:
        needed.append("ip_adapter_image")
    if request.inpaint is not None and not any(request.inpaint.outpaint):
        needed.append("mask")
    return needed + [control_name("image", index) for index in range(len(request.controls))]


def read_lora_choices(choices: Any, field_name: str = "loras") -> list[LoraChoice]:
    """LoRA choices (LoraChoice items or {name, weight} objects) checked by the schema's LoRA rules."""
    items = ([choice.to_dict() if isinstance(choice, LoraChoice) else choice for choice in choices]
             if isinstance(choices, (list, tuple)) else choices)
    try:
        checked = _LORAS.validate_python(items, context={"check_ranges": True})
    except PydanticError as error:
        raise app_error(error, field_name) from None
    return [LoraChoice(item.name, item.weight, item.hash) for item in checked]
