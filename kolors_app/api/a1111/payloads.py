"""AUTOMATIC1111's request bodies, and how each field maps onto the app's own request (or is ignored)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import BaseModel, ConfigDict

from kolors_app.core.creative_fields import HiresFix
from kolors_app.core.request import ControlUnit, GenerationRequest, InitImage, Inpaint, control_name
from kolors_app.core.config import Limits
from kolors_app.media.images import URL_PATTERN, load_image
from kolors_app.metadata.infotext import scheduler_from_a1111
from kolors_app.core.errors import ValidationError
from kolors_app.core.schedulers import SCHEDULER_NAMES

MODEL_TITLE = "Kolors"
NO_UPSCALER = "None"  # first in A1111's upscaler list; clients insert the latent modes after it
# A1111 schedule types ("scheduler" since v1.9) that have a meaning here; the others run as Automatic, with a note.
SCHEDULE_TYPES = {"automatic": "Automatic", "karras": "Karras"}
# Accepted and ignored: they make no sense for Kolors (or for this server). The README lists them.
IGNORED_FIELDS = (
    "styles", "subseed", "subseed_strength", "seed_resize_from_h", "seed_resize_from_w", "restore_faces", "tiling",
    "do_not_save_samples", "do_not_save_grid", "eta", "s_min_uncond", "s_churn", "s_tmax", "s_tmin", "s_noise",
    "override_settings_restore_afterwards", "refiner_checkpoint", "refiner_switch_at", "disable_extra_networks",
    "firstpass_image", "comments", "force_task_id", "infotext", "firstphase_width", "firstphase_height",
    "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt", "sampler_index",
    "resize_mode", "image_cfg_scale", "mask_blur_x", "mask_blur_y", "mask_round", "initial_noise_multiplier",
    "latent_mask", "include_init_images", "clip_skip",
)
# Our field name (as ValidationError names it) -> the A1111 field a caller sent.
A1111_NAMES = {"num_inference_steps": "steps", "guidance_scale": "cfg_scale", "num_images": "batch_size",
               "strength": "denoising_strength", "scheduler": "sampler_name", "image": "init_images",
               "hires": "enable_hr", "hires_upscale": "hr_scale", "hires_steps": "hr_second_pass_steps",
               "hires_upscaler": "hr_upscaler", "hires_denoising_strength": "denoising_strength",
               "inpaint_padding": "inpaint_full_res_padding", "loras": "prompt"}


class Txt2Img(BaseModel):
    """/sdapi/v1/txt2img; fields left out take Kolors' defaults (1024 px, CFG 5), unknown fields are ignored."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 5.0
    width: int = 1024
    height: int = 1024
    denoising_strength: float | None = None
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    override_settings: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] = []
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = {}


class Img2Img(Txt2Img):
    """/sdapi/v1/img2img: an init image, and with `mask` inpainting."""

    init_images: list[Any] = []
    denoising_strength: float = 0.75
    mask: str | None = None
    mask_blur: int = 4
    inpainting_fill: int = 1
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: int = 0


# A control unit's attribute (the core's control_<attribute>[_N]) -> the sd-webui-controlnet unit field.
UNIT_FIELDS = {"scale": "weight", "start": "guidance_start", "end": "guidance_end", "low_threshold": "threshold_a",
               "high_threshold": "threshold_b", "image": "image", "type": "model", "preprocess": "module"}


def a1111_error(error: ValidationError, unit_indexes: list[int] = ()) -> ValidationError:
    """The same error, naming the field as the A1111 caller spelled it (`unit_indexes`: each core unit's args index)."""
    name = A1111_NAMES.get(error.field, error.field)
    for core_index, index in enumerate(unit_indexes):
        for attribute, unit_field in UNIT_FIELDS.items():
            if error.field == control_name(attribute, core_index):
                name = f"alwayson_scripts.controlnet.args[{index}].{unit_field}"
    message = str(error).split(": ", 1)[1] if ": " in str(error) else str(error)
    return ValidationError(name, message, error.code, error.allowed)


def scheduler_for(sampler: str | None, schedule: str | None) -> tuple[str, list[str]]:
    """Our scheduler for an A1111 sampler and schedule type ("DPM++ 2M" + "Karras" -> "DPM++ 2M Karras"), and notes.

    As A1111 does, a schedule type it does not know (SillyTavern's default `normal`) is Automatic, and one the
    sampler cannot take (`Euler a` + `Karras`, Open WebUI's example) leaves the sampler's own schedule; the notes
    say so. Only an unknown sampler is refused.
    """
    sampler = sampler or "Euler"
    notes = []
    schedule = schedule or "Automatic"
    if schedule.strip().lower() not in SCHEDULE_TYPES:
        notes.append(f"scheduler {schedule!r} is not available here ({', '.join(SCHEDULE_TYPES.values())}); "
                     "Automatic was used")
        schedule = "Automatic"
    name, note = scheduler_from_a1111(sampler, schedule)
    if name is None:
        choices = ", ".join(SCHEDULER_NAMES)
        raise ValidationError("sampler_name", f"{sampler!r} is not available; samplers: {choices}", "unknown_choice",
                              list(SCHEDULER_NAMES))
    return name, notes + ([note] if note else [])


def decode_image(value: Any, field_name: str, limits: Limits):
    """An image from A1111's base64 (raw or a data: URL); never a path or a URL."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field_name, "must be a base64-encoded image")
    if value[:5].lower() == "data:":
        return load_image(value, limits, field=field_name)
    if URL_PATTERN.match(value):  # base64 has no colon
        raise ValidationError(field_name, "URLs are not accepted; send the image as base64")
    if len(value) * 3 // 4 > limits.max_upload_bytes:
        raise ValidationError(field_name, f"is larger than {limits.max_upload_bytes // 1024 // 1024} MB")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(field_name, "is not valid base64") from None
    return load_image(data, limits, field=field_name)


def check_unsupported(body: Txt2Img, saving: bool) -> list[str]:
    """Refuse, before any model work, what cannot be honoured: a script, another model; notes for what is ignored."""
    if body.script_name:
        raise ValidationError("script_name", f"scripts are not available here; got {body.script_name!r}")
    for name, script in body.alwayson_scripts.items():
        if name.lower() != "controlnet":
            raise ValidationError(f"alwayson_scripts.{name}", "is not available here (only controlnet)")
        if not isinstance(script, dict) or not isinstance(script.get("args", []), list):
            raise ValidationError(f"alwayson_scripts.{name}", "must be an object with an `args` list of units")
    checkpoint = (body.override_settings or {}).get("sd_model_checkpoint")
    if checkpoint not in (None, "", MODEL_TITLE):
        raise ValidationError("override_settings.sd_model_checkpoint", f"must be {MODEL_TITLE!r}; got {checkpoint!r}")
    # SillyTavern always asks to save; A1111 saves or not by its own settings, so this is a note, not a refusal.
    return ["save_images: saving images is off on this server; the images were not saved"] \
        if body.save_images and not saving else []


def enabled_units(body: Txt2Img) -> list[tuple[int, dict]]:
    """The enabled ControlNet units of alwayson_scripts (sd-webui-controlnet's format), with their index."""
    units = []
    for name, script in body.alwayson_scripts.items():
        for index, unit in enumerate(script.get("args", [])):
            if not isinstance(unit, dict):
                raise ValidationError(f"alwayson_scripts.{name}.args[{index}]", "must be a ControlNet unit object")
            if unit.get("enabled", True) and (unit.get("image") or unit.get("input_image")):
                units.append((index, unit))
    return units


def core_fields(body: Txt2Img, scheduler: str, seed: int) -> dict[str, Any]:
    """The settings every core request shares, for one iteration (`seed` is its first image's)."""
    return dict(prompt=body.prompt, negative_prompt=body.negative_prompt, width=body.width, height=body.height,
                num_inference_steps=body.steps, guidance_scale=body.cfg_scale, scheduler=scheduler, seed=seed,
                num_images=body.batch_size)


def build_request(body: Txt2Img, scheduler: str, seed: int, limits: Limits):
    """The app's own request for one iteration of an A1111 body (`<lora:...>` in the prompt: the core reads them)."""
    request = GenerationRequest(**core_fields(body, scheduler, seed))
    if body.enable_hr and not isinstance(body, Img2Img):
        # A1111's "None" upscaler resizes with Lanczos (images.resize_image); so does ours.
        upscaler = "Lanczos" if body.hr_upscaler == NO_UPSCALER else body.hr_upscaler or "Latent"
        request.hires = HiresFix(upscale=hires_scale(body), upscaler=upscaler,
                                 steps=body.hr_second_pass_steps,
                                 denoising_strength=0.7 if body.denoising_strength is None else body.denoising_strength)
    if isinstance(body, Img2Img):
        if not body.init_images:
            raise ValidationError("init_images", "at least one image is required")
        init = decode_image(body.init_images[0], "init_images", limits)
        request.init = InitImage(init, body.denoising_strength)
        if body.mask:
            request.inpaint = inpaint_part(body, init, limits)
    request.controls = [control_unit(unit, index, limits) for index, unit in enabled_units(body)]
    return request


def hires_scale(body: Txt2Img) -> float:
    """hr_scale, or the factor that hr_resize_x / hr_resize_y ask for (one factor: the aspect ratio is kept)."""
    if not (body.hr_resize_x or body.hr_resize_y):
        return body.hr_scale
    factors = {round(size / base, 4) for size, base in ((body.hr_resize_x, body.width), (body.hr_resize_y, body.height))
               if size}
    if len(factors) > 1:
        raise ValidationError("hr_resize_x", f"{body.hr_resize_x}x{body.hr_resize_y} changes the aspect ratio of "
                                             f"{body.width}x{body.height}; give one of them, or hr_scale")
    return factors.pop()


def inpaint_part(body: Img2Img, init, limits: Limits):
    """A1111's mask fields as the core's Inpaint part (white = repaint, like A1111)."""
    from PIL import ImageOps

    from kolors_app.media.images import fit_image

    mask = decode_image(body.mask, "mask", limits).convert("L")
    if body.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    if mask.size != init.size:
        mask = fit_image(mask.convert("RGB"), *init.size).convert("L")
    # inpainting_fill (fill / original / latent noise / nothing) has no counterpart: the inpainting U-Net
    # sees the masked image itself; it is accepted and ignored.
    return Inpaint(mask=mask, mask_blur=body.mask_blur, area="masked" if body.inpaint_full_res else "whole",
                          padding=body.inpaint_full_res_padding)


CONTROL_MODULES = {"none": None, "canny": "canny", "depth": "depth", "depth_midas": "depth", "depth_leres": "depth",
                   "depth_zoe": "depth", "openpose": "pose", "openpose_full": "pose", "dw_openpose_full": "pose"}


def control_type_of(model: str, module: str, field_name: str) -> str:
    """canny, depth or pose, from the unit's module (preprocessor) or else its model name."""
    if module not in CONTROL_MODULES:
        raise ValidationError(f"{field_name}.module", f"must be one of {', '.join(CONTROL_MODULES)}; got {module!r}")
    if CONTROL_MODULES[module]:
        return CONTROL_MODULES[module]
    for kind in ("canny", "depth", "pose"):
        if kind in (model or "").lower():
            return kind
    raise ValidationError(f"{field_name}.model", f"must name a Kolors ControlNet (canny, depth, pose); got {model!r}")


def unit_number(unit: dict, key: str, default: float, name: str) -> float:
    """A number field of a ControlNet unit (-1, webuiapi's "unset", means the default)."""
    value = unit.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{name}.{key}", f"must be a number, got {value!r}")
    return default if value == -1 else float(value)


def control_unit(unit: dict, index: int, limits: Limits):
    """One sd-webui-controlnet unit as the core's ControlUnit."""
    name = f"alwayson_scripts.controlnet.args[{index}]"
    module = str(unit.get("module") or "none")
    kind = control_type_of(str(unit.get("model") or ""), module, name)
    low, high = (unit_number(unit, key, default, name) for key, default in (("threshold_a", 100), ("threshold_b", 200)))
    if module == "canny" and (not 0 <= low <= 255 or low == 64 == high):
        low, high = 100, 200  # webuiapi's default 64/64 are no canny thresholds; A1111's canny uses 100/200
    return ControlUnit(type=kind, image=decode_image(unit.get("image") or unit.get("input_image"),
                                                            f"{name}.image", limits),
                              preprocess=module != "none", scale=unit.get("weight", 1.0),
                              start=unit.get("guidance_start", 0.0), end=unit.get("guidance_end", 1.0),
                              low_threshold=int(low), high_threshold=int(high))
