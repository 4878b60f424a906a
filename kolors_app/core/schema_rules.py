"""The rule of each flat parameter, defined once: its type, its range (from the Limits) and its message.

The rules run inside pydantic (core/schema.py) with the Limits in the validation context. A request is
checked in full; a record (an image's JSON, a history entry, a restore) only for its types, because the
values it holds were right where it was made (an inpainted canvas has the photo's size, not a request size).
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from pydantic import BeforeValidator, ValidationInfo
from pydantic_core import PydanticCustomError

from kolors_app.core.config import Limits
from kolors_app.core.creative_fields import LORA_WEIGHT_RANGE, MAX_LORAS, MAX_STYLES, MAX_UPSCALE
from kolors_app.core.request import CONTROL_TYPES, INPAINT_AREAS, INPAINT_MODELS, MAX_SEED, MODES, OUTPAINT_SIDES
from kolors_app.core.schedulers import SCHEDULER_NAMES

JSON_INTEGER = 2**63  # larger whole numbers do not survive JSON readers (64 bits)
MAX_MODEL_CHARS = 200
MAX_NAME_CHARS = 200  # a LoRA, style or upscaler name
MAX_HASH_CHARS = 64


@dataclass(frozen=True)
class Bounds:
    """A number range, inclusive unless `low_open`; `whole` for whole numbers, `multiple_of` for sizes."""

    low: float
    high: float
    whole: bool = False
    low_open: bool = False
    multiple_of: int | None = None

    def text(self) -> str:
        """'from 1 to 150', or 'above 0 to 1' when the low end is excluded."""
        return f"{'above' if self.low_open else 'from'} {shown(self.low)} to {shown(self.high)}"

    def allowed(self) -> dict[str, Any]:
        """The range as an error's `allowed` data."""
        allowed: dict[str, Any] = {"min": self.low, "max": self.high}
        if self.low_open:
            allowed["min_exclusive"] = True
        if self.whole:
            allowed["whole"] = True
        if self.multiple_of:
            allowed["multiple_of"] = self.multiple_of
        return allowed


def shown(number: float) -> str:
    """A number as a message shows it: 4294967295, 30, 0.45."""
    return str(number) if isinstance(number, int) else f"{number:g}"


def _fixed(bounds: Bounds) -> Callable[[Limits], Bounds]:
    return lambda limits: bounds


def _size(limits: Limits) -> Bounds:
    return Bounds(limits.min_size, limits.max_size, whole=True, multiple_of=8)


# Flat name (controls without their _2/_3) -> its range under the server's Limits.
BOUNDS: dict[str, Callable[[Limits], Bounds]] = {
    "width": _size, "height": _size,
    "num_inference_steps": lambda limits: Bounds(1, limits.max_steps, whole=True),
    "guidance_scale": lambda limits: Bounds(0.0, float(limits.max_guidance)),
    "seed": _fixed(Bounds(0, MAX_SEED, whole=True)),
    "num_images": lambda limits: Bounds(1, limits.max_images, whole=True),
    "strength": _fixed(Bounds(0.0, 1.0, low_open=True)),
    "ip_adapter_scale": _fixed(Bounds(0.0, 2.0)),
    "mask_blur": _fixed(Bounds(0, 64, whole=True)),
    "inpaint_padding": _fixed(Bounds(0, 256, whole=True)),
    **{f"outpaint_{side}": lambda limits: Bounds(0, limits.max_size, whole=True) for side in OUTPAINT_SIDES},
    "control_scale": _fixed(Bounds(0.0, 2.0)),
    "control_start": _fixed(Bounds(0.0, 1.0)),
    "control_end": _fixed(Bounds(0.0, 1.0)),
    "control_low_threshold": _fixed(Bounds(0, 255, whole=True)),
    "control_high_threshold": _fixed(Bounds(0, 255, whole=True)),
    "hires_upscale": _fixed(Bounds(1.0, MAX_UPSCALE)),
    "hires_steps": lambda limits: Bounds(0, limits.max_steps, whole=True),
    "hires_denoising_strength": _fixed(Bounds(0.0, 1.0, low_open=True)),
    "lora_weight": _fixed(Bounds(*LORA_WEIGHT_RANGE)),
}
# Flat name -> the longest text it may hold.
TEXT_LIMITS: dict[str, Callable[[Limits], int]] = {
    "prompt": lambda limits: limits.max_prompt_chars,
    "negative_prompt": lambda limits: limits.max_prompt_chars,
    # What ran: the prompt with its styles added (each style's text up to a prompt's length).
    "final_prompt": lambda limits: (MAX_STYLES + 1) * limits.max_prompt_chars,
    "final_negative_prompt": lambda limits: (MAX_STYLES + 1) * limits.max_prompt_chars,
    "model": lambda limits: MAX_MODEL_CHARS,
    "hires_upscaler": lambda limits: MAX_NAME_CHARS,
    "lora_name": lambda limits: MAX_NAME_CHARS,
    "lora_hash": lambda limits: MAX_HASH_CHARS,
}
EMPTY_WHEN_NONE = ("prompt", "negative_prompt")
CHOICES: dict[str, tuple] = {"mode": MODES, "scheduler": SCHEDULER_NAMES, "inpaint_area": INPAINT_AREAS,
                             "inpaint_model": INPAINT_MODELS, "control_type": ("none", *CONTROL_TYPES)}


def rule_name(field_name: str) -> str:
    """The rule a flat name follows: control_scale_2 follows control_scale."""
    return re.sub(r"_[23]$", "", field_name) if field_name.startswith("control_") else field_name


def fail(code: str, message: str, allowed: Any = None):
    """Raise the error pydantic collects; core/schema.py turns it into the app's ValidationError."""
    raise PydanticCustomError(code, "{message}", {"message": message, "allowed": allowed})


def _limits(info: ValidationInfo) -> Limits:
    return (info.context or {}).get("limits") or Limits()


def _full(info: ValidationInfo) -> bool:
    """Whether ranges and choices are checked too (a request), or types only (a record)."""
    return (info.context or {}).get("check_ranges", True)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def check_bounds(number: float, bounds: Bounds) -> None:
    """Refuse a number outside the range or off its multiple."""
    if number > bounds.high or number < bounds.low or (bounds.low_open and number == bounds.low):
        fail("out_of_range", f"must be {bounds.text()}, got {shown(number)}", bounds.allowed())
    step = bounds.multiple_of
    if step and number % step:
        fail("out_of_range", f"must be a multiple of {step} (e.g. {number - number % step}), got {number}",
             bounds.allowed())


def _whole(value: Any, info: ValidationInfo, rule: str, described: str = "a whole number") -> int:
    bounds = BOUNDS[rule](_limits(info))
    if not _is_number(value) or value != int(value):
        fail("wrong_type", f"must be {described} {bounds.text()}, got {value!r}", bounds.allowed())
    number = int(value)
    if _full(info):
        check_bounds(number, bounds)
    elif abs(number) > JSON_INTEGER:
        fail("out_of_range", f"must be at most {JSON_INTEGER} either way, got {number}",
             {"min": -JSON_INTEGER, "max": JSON_INTEGER, "whole": True})
    return number


def whole_number(value: Any, info: ValidationInfo) -> int:
    """A whole number (5.0 is 5; '5', 5.5 and true are refused) in its range."""
    return _whole(value, info, rule_name(info.field_name))


def seed(value: Any, info: ValidationInfo) -> int | None:
    """None or -1 (a random seed, None), or a whole number from 0 to 2**32-1."""
    if value is None or (_is_number(value) and value == -1):
        return None
    return _whole(value, info, "seed", "-1 (random) or a whole number")


def _number(value: Any, info: ValidationInfo, rule: str) -> float:
    bounds = BOUNDS[rule](_limits(info))
    if not _is_number(value):
        fail("wrong_type", f"must be a number {bounds.text()}, got {value!r}", bounds.allowed())
    if _full(info):
        check_bounds(float(value), bounds)
    return float(value)


def number(value: Any, info: ValidationInfo) -> float:
    """A finite number (not true/false, not text) in its range."""
    return _number(value, info, rule_name(info.field_name))


def _text(value: Any, info: ValidationInfo, rule: str) -> str:
    if value is None and rule in EMPTY_WHEN_NONE:
        return ""
    limit = TEXT_LIMITS[rule](_limits(info))
    if not isinstance(value, str):
        fail("wrong_type", f"must be text, got {type(value).__name__}", {"max_length": limit})
    if len(value) > limit:
        fail("too_long", f"is {len(value)} characters long; at most {limit} allowed", {"max_length": limit})
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate: the tokenizer and the PNG writer would fail
            fail("invalid", f"holds an invalid character at position {error.start}")
    return value


def text(value: Any, info: ValidationInfo) -> str:
    """Text up to its field's length."""
    return _text(value, info, rule_name(info.field_name))


def choice(value: Any, info: ValidationInfo) -> str:
    """One of the field's choices; a record may name one this server lacks (restore leaves such a control)."""
    rule = rule_name(info.field_name)
    choices = CHOICES[rule]
    if rule == "control_type" and value is None:
        return "none"
    if isinstance(value, str) and (value in choices or (rule != "mode" and not _full(info))):
        return value
    fail("unknown_choice", f"must be one of {', '.join(choices)}; got {value!r}", list(choices))


def flag(value: Any, info: ValidationInfo) -> bool:
    """true or false, nothing else."""
    if not isinstance(value, bool):
        fail("wrong_type", f"must be true or false, got {value!r}", [True, False])
    return value


def lora_list(value: Any) -> list:
    """A list of at most MAX_LORAS items (each checked as a LoRA item)."""
    if not isinstance(value, list):
        fail("wrong_type", "must be a list of {name, weight} objects (or <lora:name:weight> in the prompt)",
             {"max_items": MAX_LORAS})
    if len(value) > MAX_LORAS:
        fail("too_many", f"at most {MAX_LORAS} LoRAs at once, got {len(value)}", {"max_items": MAX_LORAS})
    return value


def unique_names(items: list) -> list:
    """Each LoRA listed once."""
    names = [item.name for item in items]
    twice = next((name for index, name in enumerate(names) if name in names[:index]), None)
    if twice is not None:
        fail("not_unique", f"each LoRA may be listed once; {twice!r} is listed twice")
    return items


def lora_item(value: Any) -> Any:
    """An object, as {name, weight, hash}."""
    if not isinstance(value, dict):
        fail("wrong_type", f"each LoRA must be {{name, weight}}, got {value!r:.80}")
    return value


def lora_name(value: Any, info: ValidationInfo) -> str:
    """A LoRA's name or Hub repo id, not empty and not a path (`a/..`, `/etc/x`, `C:\\x`)."""
    name = _text(value, info, "lora_name").strip()
    if not name:
        fail("invalid", "a LoRA name must not be empty")
    if _full(info) and (any(part in ("", ".", "..") for part in name.split("/")) or "\\" in name
                        or not name.isprintable()):
        fail("invalid", f"{name!r:.80} is not a LoRA name: give a name from the LoRA list or a Hub repo id "
                        "(owner/name), never a path")
    return name


def style_list(value: Any) -> list[str]:
    """A list of at most MAX_STYLES style names."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        fail("wrong_type", "must be a list of style names", {"max_items": MAX_STYLES})
    if len(value) > MAX_STYLES:
        fail("too_many", f"at most {MAX_STYLES} styles at once, got {len(value)}", {"max_items": MAX_STYLES})
    if any(len(name) > MAX_NAME_CHARS for name in value):
        fail("too_long", f"a style name is at most {MAX_NAME_CHARS} characters", {"max_length": MAX_NAME_CHARS})
    return value


WholeNumber = Annotated[int, BeforeValidator(whole_number)]
Number = Annotated[float, BeforeValidator(number)]
Seed = Annotated[int | None, BeforeValidator(seed)]
Text = Annotated[str, BeforeValidator(text)]
Choice = Annotated[str, BeforeValidator(choice)]
Flag = Annotated[bool, BeforeValidator(flag)]
LoraName = Annotated[str, BeforeValidator(lora_name)]
LoraWeight = Annotated[float, BeforeValidator(lambda value, info: _number(value, info, "lora_weight"))]
LoraHash = Annotated[str | None, BeforeValidator(lambda value, info: None if value is None else
                                                  _text(value, info, "lora_hash"))]
StyleNames = Annotated[list[str], BeforeValidator(style_list)]
