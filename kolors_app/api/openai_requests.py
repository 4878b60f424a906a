"""OpenAI's image calls (generations, edits, variations) read into the app's own request, refusals naming the field
as the client sent it (`size`, `n`, `mask`).

What a client sends besides the app's fields is ignored and listed (the routes name it in a response header). The
app's own parameters (`negative_prompt`, `seed`, `num_inference_steps`, ...; the `openai` client's `extra_body`) go
through the app's one schema, like every other entrance's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from kolors_app.core.config import Limits
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import GenerationRequest
from kolors_app.core.schema import request_from_dict
from kolors_app.media.images import fit_image, load_image, load_image_and_alpha, size_for

RESPONSE_FORMATS = ("b64_json", "url")
# Image format -> media type. Only a PNG carries the image's parameters (its text chunks).
OUTPUT_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
DEFAULT_SIZE = (1024, 1024)
SIZE_PATTERN = re.compile(r"(\d{1,5})x(\d{1,5})")
# The app's own parameters a call may add (all of them through the app's schema).
APP_FIELDS = ("negative_prompt", "seed", "num_inference_steps", "guidance_scale", "scheduler", "styles")
EDIT_FIELDS = (*APP_FIELDS, "strength", "mask_blur", "inpaint_model")
VARIATION_FIELDS = (*APP_FIELDS, "prompt", "ip_adapter_scale")
# OpenAI's fields this server reads itself (the rest it ignores and lists).
READ_FIELDS = ("prompt", "n", "size", "response_format", "stream", "output_format", "output_compression", "model")
# Multipart fields are text: the numbers among the app's fields are read as numbers first.
WHOLE_FIELDS = ("n", "seed", "num_inference_steps", "mask_blur", "output_compression")
DECIMAL_FIELDS = ("guidance_scale", "strength", "ip_adapter_scale")
# The app's field names in its refusals -> the OpenAI field the client sent.
OPENAI_NAMES = {"num_images": "n", "width": "size", "height": "size", "ip_adapter_image": "image", "loras": "prompt"}
OPENAI_EDIT_BLUR = 0  # OpenAI repaints exactly the transparent area; a blur would reach past it


@dataclass
class OpenAICall:
    """One OpenAI call as the app runs it: the request, how to answer, and what the client sent for nothing."""

    request: GenerationRequest
    response_format: str = "b64_json"
    output_format: str = "png"
    compression: int = 100  # JPEG and WebP quality
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def openai_name(app_field: str) -> str:
    """The OpenAI field a refusal of the app's names (`num_images` -> `n`)."""
    return OPENAI_NAMES.get(app_field, app_field)


def parse_size(value: Any, limits: Limits, default: tuple[int, int]) -> tuple[int, int]:
    """`WIDTHxHEIGHT` within the app's limits, or `auto` (and nothing) for `default`."""
    if value is None or value in ("", "auto"):
        return default
    allowed = {"min": limits.min_size, "max": limits.max_size, "multiple_of": 8}
    match = SIZE_PATTERN.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValidationError("size", f"must be WIDTHxHEIGHT in pixels (e.g. 1024x1024) or auto; got {value!r}",
                              "wrong_type", allowed)
    width, height = int(match[1]), int(match[2])
    if not all(limits.min_size <= side <= limits.max_size and side % 8 == 0 for side in (width, height)):
        raise ValidationError("size", f"{width}x{height} is not available: each side from {limits.min_size} to "
                                      f"{limits.max_size} pixels, a multiple of 8 (e.g. 1024x1024)", "out_of_range",
                              allowed)
    return width, height


def auto_size(size: tuple[int, int], limits: Limits) -> tuple[int, int]:
    """An image's own size when the app can make it, else the nearest it can (same area and aspect, multiples of 8)."""
    width, height = size
    if all(limits.min_size <= side <= limits.max_size and side % 8 == 0 for side in size):
        return size
    return size_for(size, megapixels=width * height / 1024 / 1024, multiple=8, limits=limits)


def answer_fields(fields: dict) -> dict[str, Any]:
    """How to answer: response format, image format and compression. A stream is refused.

    Without `response_format`, a DALL·E model name gets a link, as OpenAI answers it (LibreChat's DALL·E 3 tool
    reads `url`); any other name gets base64, and nothing is kept.
    """
    if fields.get("stream") not in (None, False, "false", "False"):
        raise ValidationError("stream", "streaming is not available here; leave it out or false", "unknown_choice",
                              [False])
    output = fields.get("output_format") or "png"
    if output not in OUTPUT_FORMATS:
        raise ValidationError("output_format", f"must be one of {', '.join(OUTPUT_FORMATS)}; got {output!r}",
                              "unknown_choice", list(OUTPUT_FORMATS))
    compression = fields.get("output_compression")
    compression = 100 if compression is None else compression
    if isinstance(compression, bool) or not isinstance(compression, int) or not 0 <= compression <= 100:
        raise ValidationError("output_compression", f"must be a whole number from 0 to 100; got {compression!r}",
                              "out_of_range", {"min": 0, "max": 100})
    model = fields.get("model")
    default = "url" if isinstance(model, str) and model.lower().startswith("dall-e") else "b64_json"
    answer = fields.get("response_format") or default
    if answer not in RESPONSE_FORMATS:
        raise ValidationError("response_format", f"must be b64_json or url; got {answer!r}", "unknown_choice",
                              list(RESPONSE_FORMATS))
    return {"response_format": answer, "output_format": output, "compression": compression}


def text_numbers(fields: dict[str, str]) -> dict[str, Any]:
    """Multipart text fields with the app's numbers read as numbers (what is not a number stays, to be refused)."""
    values: dict[str, Any] = dict(fields)
    for name, kind in [(name, int) for name in WHOLE_FIELDS] + [(name, float) for name in DECIMAL_FIELDS]:
        if isinstance(values.get(name), str):
            try:
                values[name] = kind(values[name].strip())
            except ValueError:
                pass  # the schema refuses it, naming the field
    return values


def _prompt(fields: dict) -> Any:
    if fields.get("prompt") is None:
        raise ValidationError("prompt", "is required: describe the image you want", "required")
    return fields["prompt"]


def _request(flat: dict[str, Any], fields: dict, taken: tuple[str, ...], limits: Limits) -> GenerationRequest:
    """The app's request for flat values plus the app's own fields the call gave; every value checked by the schema."""
    flat.update({name: fields[name] for name in taken if name in fields})
    if flat.get("num_images") is None:
        flat["num_images"] = 1
    try:
        return request_from_dict(flat, limits)
    except ValidationError as error:
        raise error.renamed(openai_name(error.field)) from None


def _ignored(fields: dict, taken: tuple[str, ...]) -> list[str]:
    return [name for name in fields if name not in (*READ_FIELDS, *taken)]


def generation_call(body: Any, limits: Limits) -> OpenAICall:
    """POST /v1/images/generations (JSON)."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object", "wrong_type")
    answer = answer_fields(body)
    width, height = parse_size(body.get("size"), limits, DEFAULT_SIZE)
    flat = {"mode": "text_to_image", "prompt": _prompt(body), "width": width, "height": height,
            "num_images": body.get("n")}
    return OpenAICall(_request(flat, body, APP_FIELDS, limits), **answer, ignored=_ignored(body, APP_FIELDS))


def repaint_mask(alpha: Image.Image) -> Image.Image:
    """OpenAI's mask (fully transparent = edit) as the app's (white = repaint)."""
    return alpha.point(lambda value: 255 if value == 0 else 0)


def edit_call(fields: dict[str, str], image_data: bytes, mask_data: bytes | None, limits: Limits) -> OpenAICall:
    """POST /v1/images/edits (multipart): the transparent area of the mask (else of the image) is repainted."""
    values = text_numbers(fields)
    answer = answer_fields(values)
    prompt = _prompt(values)
    image, alpha = load_image_and_alpha(image_data, limits, "image")
    if mask_data is not None:
        mask_rgb, alpha = load_image_and_alpha(mask_data, limits, "mask")
        if mask_rgb.size != image.size:
            raise ValidationError("mask", f"is {mask_rgb.width}x{mask_rgb.height}; it must be the image's size, "
                                          f"{image.width}x{image.height}", "invalid")
        if alpha is None:
            raise ValidationError("mask", "has no transparency: its fully transparent pixels mark what is repainted "
                                          "(a PNG with an alpha channel)", "invalid")
    mask = repaint_mask(alpha) if alpha is not None else None
    if mask is not None and mask.getextrema()[1] == 0:
        if mask_data is not None:
            raise ValidationError("mask", "has no fully transparent pixel, so nothing would be repainted", "invalid")
        mask = None  # an image with an alpha channel but nothing transparent: an opaque image
    width, height = parse_size(values.get("size"), limits, auto_size(image.size, limits))
    notes = []
    if (width, height) != image.size:
        notes.append(f"the image ({image.width}x{image.height}) was fitted to {width}x{height} (scaled, then "
                     "cropped to the aspect ratio)")
    flat = {"mode": "inpaint" if mask is not None else "image_to_image", "prompt": prompt, "width": width,
            "height": height, "num_images": values.get("n")}
    if mask is not None:
        flat["mask_blur"] = OPENAI_EDIT_BLUR
    else:
        notes.append("nothing is transparent (no mask, an opaque image): the whole image was repainted "
                     "(image-to-image)")
    request = _request(flat, values, EDIT_FIELDS, limits)
    request.init.image = fit_image(image, width, height)
    if mask is not None:
        fitted = fit_image(mask.convert("RGB"), width, height).convert("L")
        request.inpaint.mask = fitted.point(lambda value: 255 if value >= 128 else 0)
    return OpenAICall(request, **answer, ignored=_ignored(values, EDIT_FIELDS), notes=notes)


def variation_call(fields: dict[str, str], image_data: bytes, limits: Limits) -> OpenAICall:
    """POST /v1/images/variations (multipart): the image steers new ones as an IP-Adapter reference."""
    values = text_numbers(fields)
    answer = answer_fields(values)
    width, height = parse_size(values.get("size"), limits, DEFAULT_SIZE)
    flat = {"mode": "ip_adapter", "prompt": "", "width": width, "height": height, "num_images": values.get("n")}
    request = _request(flat, values, VARIATION_FIELDS, limits)
    request.reference.image = load_image(image_data, limits, field="image")
    return OpenAICall(request, **answer, ignored=_ignored(values, VARIATION_FIELDS))


__all__ = ["OpenAICall", "generation_call", "edit_call", "variation_call", "openai_name", "parse_size"]
