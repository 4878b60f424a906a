"""Write and read generation parameters in images: our JSON chunk and AUTOMATIC1111's `parameters` text."""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from kolors_app.core.config import Limits
from kolors_app.media.image_guard import exif_of, open_image
from kolors_app.media.images import DECODE_ERRORS
from kolors_app.metadata.control_infotext import control_pairs, read_control_labels
from kolors_app.media.png_encoder import encode_png
from kolors_app.core.params import MODEL_NAME, MODES, ValidationError, parameter_kinds
from kolors_app.core.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES

PARAMETERS_KEY = "parameters"  # the A1111 text chunk
JSON_KEY = "kolors_studio"  # our iTXt chunk: the request dict as JSON
MAX_MODEL_CHARS = 200

# Our request key ("size" is width x height) -> A1111 infotext label.
LABELS = {"num_inference_steps": "Steps", "scheduler": "Sampler", "guidance_scale": "CFG scale", "seed": "Seed",
          "size": "Size", "num_images": "Batch size", "model": "Model", "strength": "Denoising strength",
          "ip_adapter_scale": "IP-Adapter scale", "mode": "Mode"}
NEGATIVE_PREFIX = "Negative prompt:"
# A1111's pattern for one `Key: value` pair; a value is JSON-quoted when it holds a comma, colon or quote.
PARAM_PATTERN = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")
# A1111 schedule types that our scheduler names spell as a suffix; "Automatic" means the sampler's own.
SCHEDULE_SUFFIXES = {"karras": " Karras"}
PLAIN_SCHEDULES = {"", "automatic", "default"}
HIRES_PREFIX = "Hires"

EXIF_IFD = 0x8769
EXIF_USER_COMMENT = 0x9286


@dataclass
class ImageParameters:
    """What an image says about how it was made."""

    parameters: dict[str, Any]
    text: str | None = None  # the raw A1111 text, when the image has one
    source: str | None = None  # JSON_KEY, PARAMETERS_KEY, "exif" or None
    warnings: list[str] = field(default_factory=list)


def quote(value: Any) -> str:
    """A1111's quoting: JSON double quotes when the value would break the `Key: value, ...` line."""
    text = str(value)
    if any(mark in text for mark in (",", ":", "\n", '"')):
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    """Undo `quote`; text that is not a valid JSON string is kept as written."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def _number_text(value: Any) -> str:
    # repr of a float is the shortest text that reads back as the same float.
    return repr(float(value)) if isinstance(value, float) else str(value)


def format_parameters(params: dict[str, Any]) -> str:
    """The A1111 `parameters` text: prompt, `Negative prompt: ...`, then one `Key: value, ...` line."""
    mode = params.get("mode", "text_to_image")
    values: dict[str, Any] = {
        "num_inference_steps": params.get("num_inference_steps"),
        "scheduler": params.get("scheduler"),
        "guidance_scale": params.get("guidance_scale"),
        "seed": params.get("seed"),
        "size": f"{params['width']}x{params['height']}" if "width" in params and "height" in params else None,
        # Like A1111, a batch size is written only when more than one image was asked for.
        "num_images": params["num_images"] if params.get("num_images", 1) != 1 else None,
        "model": params.get("model") or MODEL_NAME,
    }
    if mode != "text_to_image":
        values.update(strength=params.get("strength"), ip_adapter_scale=params.get("ip_adapter_scale"), mode=mode)
    labelled = [(LABELS[key], value) for key, value in values.items() if value is not None]
    from kolors_app.creative.part import infotext_pairs, infotext_prompts

    labelled += infotext_pairs(params)  # Hires ..., Lora hashes
    pairs = ", ".join([f"{label}: {quote(_number_text(value))}" for label, value in labelled]
                      + [f"{label}: {text}" for label, text in control_pairs(params)])
    prompt, negative = infotext_prompts(params)  # what ran: styles applied, {a|b} drawn
    lines = [prompt]
    if negative:
        lines.append(f"{NEGATIVE_PREFIX} {negative}")
    lines.append(pairs)
    return "\n".join(lines)


def png_info(params: dict[str, Any]) -> PngImagePlugin.PngInfo:
    """PNG text chunks: A1111 `parameters` (tEXt, or iTXt when not Latin-1) and our JSON iTXt chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, format_parameters(params))
    info.add_itxt(JSON_KEY, json.dumps(params, ensure_ascii=False, allow_nan=False))
    return info


def png_bytes(image: Image.Image, params: dict[str, Any]) -> bytes:
    """The image as PNG bytes carrying both parameter chunks, by the fast encoder (png_encoder.py, bench/api.py)."""
    return encode_png(image, png_info(params))


def save_png(image: Image.Image | None, params: dict[str, Any], path: str | os.PathLike, *, overwrite: bool = True,
             data: bytes | None = None) -> Path:
    """Write a PNG with both chunks atomically: readers see no file or the whole file, never a part.

    `data` is the PNG already encoded by png_bytes (then `image` is not encoded again).
    With `overwrite=False` an existing file is never replaced and FileExistsError is raised.
    """
    path = Path(path)
    data = png_bytes(image, params) if data is None else data
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp_file:
            temp_file.write(data)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        if overwrite:
            os.replace(temp_name, path)
        else:
            _publish_new(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    _fsync_folder(path.parent)
    return path


def _publish_new(temp_name: str, path: Path) -> None:
    try:
        # A hard link fails when the name exists, so two writers can never replace each other's file.
        os.link(temp_name, path)
    except FileExistsError:
        raise
    except OSError:
        # Some file systems (FAT, some network shares) have no hard links: check, then rename.
        if path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
        os.replace(temp_name, path)
        return
    os.unlink(temp_name)


def _fsync_folder(folder: Path) -> None:
    # Makes the new name itself survive a power cut; not possible on every OS, where it is skipped.
    if not hasattr(os, "O_DIRECTORY"):
        return
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def clean_parameters(values: Any, field_name: str = "parameters", limits: Limits = Limits()) -> dict[str, Any]:
    """Check the types of a request dict from outside (a file, a browser); unknown keys are dropped.

    Ranges are left to params.validate(), which runs before any generation.
    """
    if not isinstance(values, dict):
        raise ValidationError(field_name, f"must be an object, got {type(values).__name__}")
    mode = values.get("mode", "text_to_image")
    if mode not in MODES:
        raise ValidationError(f"{field_name}.mode", f"must be one of {sorted(MODES)}, got {mode!r}")
    cleaned: dict[str, Any] = {"mode": mode}
    for name, kind in parameter_kinds(mode).items():
        if name in values:
            cleaned[name] = _typed(f"{field_name}.{name}", values[name], kind, limits)
    if "model" in values:
        cleaned["model"] = _short_text(f"{field_name}.model", values["model"], MAX_MODEL_CHARS)
    from kolors_app.creative.part import clean_values

    cleaned.update(clean_values(values, field_name))
    return cleaned


def _typed(name: str, value: Any, kind: str, limits: Limits) -> Any:
    if kind == "str":
        return _short_text(name, value, limits.max_prompt_chars)
    if kind == "int | None" and value is None:
        return None
    if kind in ("int", "int | None"):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                or value != int(value) or abs(value) > 2**63:
            raise ValidationError(name, f"must be a whole number, got {value!r}")
        return int(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValidationError(name, f"must be true or false, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValidationError(name, f"must be a number, got {value!r}")
        return float(value)
    raise ValidationError(name, f"has an unsupported type {kind}")


def _short_text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(name, f"must be text, got {type(value).__name__}")
    if len(value) > limit:
        raise ValidationError(name, f"is {len(value)} characters long; at most {limit} allowed")
    return value


def settings_pairs(line: str) -> list[tuple[str, str]]:
    """The `Key: value` pairs of an A1111 settings line, read left to right; text that is no pair is skipped."""
    pairs, position = [], 0
    # Matching at each position in turn, not re.findall, keeps this linear: findall retries the key
    # pattern at every character, which takes minutes on a hostile 100 kB line without colons.
    while position < len(line):
        match = PARAM_PATTERN.match(line, position)
        if match:
            pairs.append((match.group(1), match.group(2)))
            position = match.end()
            continue
        comma = line.find(",", position)
        if comma < 0:
            break
        position = comma + 1
    return pairs


def split_parameters(text: str) -> tuple[str, str, list[tuple[str, str]]]:
    """Split A1111 text into prompt, negative prompt and the (label, value) pairs of its last line."""
    lines = text.split("\n")
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    pairs = settings_pairs(lines[-1].strip())
    # A1111's rule: the last line holds the settings only when it has at least three pairs.
    if len(pairs) >= 3:
        lines.pop()
    else:
        pairs = []
    prompt_lines, negative_lines = lines, []
    for index, line in enumerate(lines):
        if line.startswith(NEGATIVE_PREFIX):
            first = line[len(NEGATIVE_PREFIX):]
            negative_lines = [first[1:] if first.startswith(" ") else first] + lines[index + 1:]
            prompt_lines = lines[:index]
            break
    return "\n".join(prompt_lines), "\n".join(negative_lines), [(k, unquote(v.strip())) for k, v in pairs]


def parse_parameters(text: str) -> ImageParameters:
    """Read A1111 `parameters` text into our request dict; what cannot be used is said in `warnings`."""
    prompt, negative, pairs = split_parameters(text)
    labels = dict(pairs)
    found: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative, "num_images": 1}
    notes: list[str] = []
    conversions = [("Steps", "num_inference_steps", int), ("CFG scale", "guidance_scale", float),
                   ("Seed", "seed", int), ("Batch size", "num_images", int), ("Denoising strength", "strength", float),
                   ("IP-Adapter scale", "ip_adapter_scale", float)]
    for label, key, convert in conversions:
        if label in labels:
            try:
                number = convert(labels[label])
                # JSON (and so the page) holds 64-bit integers at most.
                if isinstance(number, float) and not math.isfinite(number) or abs(number) >= 2**63:
                    raise ValueError
                found[key] = number
            except ValueError:
                notes.append(f"{label} {labels[label]!r} is not a number; left at its default")
    if "Size" in labels:
        size = SIZE_PATTERN.match(labels["Size"])
        if size:
            found["width"], found["height"] = (int(side) if len(side) < 19 else 2**63 - 1
                                               for side in size.groups())
        else:
            notes.append(f"Size {labels['Size']!r} is not WIDTHxHEIGHT; left at its default")
    if "Sampler" in labels:
        scheduler, note = scheduler_from_a1111(labels["Sampler"], labels.get("Schedule type", ""))
        if scheduler:
            found["scheduler"] = scheduler
        if note:
            notes.append(note)
    if "Model" in labels:
        found["model"] = labels["Model"][:MAX_MODEL_CHARS]
    from kolors_app.creative.part import from_infotext

    found.update(from_infotext(labels, prompt))
    found["mode"] = _mode(labels, notes)
    read_control_labels(labels, found, notes)
    if found["mode"] == "text_to_image":
        found.pop("strength", None)
        found.pop("ip_adapter_scale", None)
    return ImageParameters(found, text=text, source=PARAMETERS_KEY, warnings=notes)


def _mode(labels: dict[str, str], notes: list[str]) -> str:
    if "Mode" in labels:
        if labels["Mode"] in MODES:
            return labels["Mode"]
        notes.append(f"Mode {labels['Mode']!r} is unknown; read as text_to_image")
        return "text_to_image"
    if "IP-Adapter scale" in labels:
        return "ip_adapter"
    hires = any(label.startswith(HIRES_PREFIX) for label in labels)
    # A1111 writes Denoising strength for img2img, and also for the second pass of a Hires fix.
    return "image_to_image" if "Denoising strength" in labels and not hires else "text_to_image"


def scheduler_from_a1111(sampler: str, schedule_type: str = "") -> tuple[str | None, str | None]:
    """Our scheduler name for an A1111 sampler (and v1.9+ `Schedule type`), and a note when none fits."""
    by_lower = {name.lower(): name for name in SCHEDULER_NAMES}
    sampler_key = sampler.strip().lower()
    schedule_key = schedule_type.strip().lower()
    if schedule_key in SCHEDULE_SUFFIXES:
        suffix = SCHEDULE_SUFFIXES[schedule_key].lower()
        combined = sampler_key if sampler_key.endswith(suffix) else sampler_key + suffix
        if combined in by_lower:
            return by_lower[combined], None
    elif schedule_key in PLAIN_SCHEDULES and sampler_key in by_lower:
        return by_lower[sampler_key], None
    if sampler_key in by_lower:
        return by_lower[sampler_key], (f"Schedule type {schedule_type!r} is not available for {sampler!r}; "
                                        f"its default schedule is used")
    return None, f"Sampler {sampler!r} is not available; the default ({DEFAULT_SCHEDULER}) is used"


def exif_user_comment(image: Image.Image) -> str | None:
    """The EXIF UserComment text, where A1111 keeps parameters in JPEG and WebP files."""
    # exif_of, not getexif(): on a PNG, getexif() decodes every pixel to look for EXIF after the image data.
    raw = exif_of(image).get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
    if isinstance(raw, str):
        return raw or None
    if not isinstance(raw, bytes) or len(raw) < 8:
        return None
    prefix, body = raw[:8], raw[8:]
    if prefix.startswith(b"UNICODE"):
        # piexif (used by A1111) writes UTF-16 big-endian; an ASCII first character tells the byte order.
        encoding = "utf-16-le" if len(body) > 1 and body[0] != 0 and body[1] == 0 else "utf-16-be"
        text = body.decode(encoding, errors="replace")
    else:
        text = body.decode("utf-8", errors="replace")
    return text.rstrip("\0") or None


def read_image_parameters(source: Image.Image | bytes | str | os.PathLike, field: str = "image") -> ImageParameters:
    """Everything an image says about its parameters; `parameters` is {} when it says nothing.

    Only headers and metadata are read, never the pixels. A path is opened as given: the caller
    decides which paths may be read (see images.load_image for uploads).
    """
    if isinstance(source, Image.Image):
        return _from_image(source)
    limits = Limits()
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as file:
                data = file.read(limits.max_upload_bytes + 1)
        except OSError as error:  # the message names no path: it may be the server's upload folder
            raise ValidationError(field, f"could not be read ({error.strerror or type(error).__name__})") from None
    if len(data) > limits.max_upload_bytes:
        raise ValidationError(field, f"is larger than {limits.max_upload_bytes / 1024 / 1024:.1f} MB")
    with open_image(data, limits, field) as opened:
        return _from_image(opened)


def _from_image(image: Image.Image) -> ImageParameters:
    notes: list[str] = []
    text = image.info.get(JSON_KEY)
    if isinstance(text, str):
        try:
            return ImageParameters(clean_parameters(json.loads(text), JSON_KEY), source=JSON_KEY,
                                   text=image.info.get(PARAMETERS_KEY))
        except (ValueError, RecursionError) as error:  # JSONDecodeError and ValidationError are ValueErrors
            notes.append(f"the {JSON_KEY} chunk is damaged ({error}); read the A1111 text instead")
    text, source = image.info.get(PARAMETERS_KEY), PARAMETERS_KEY
    if not isinstance(text, str):
        text, source = _exif_text(image, notes), "exif"
    if not isinstance(text, str):
        return ImageParameters({}, warnings=notes)
    result = parse_parameters(text)
    result.source, result.warnings = source, notes + result.warnings
    return result


def _exif_text(image: Image.Image, notes: list[str]) -> str | None:
    try:
        return exif_user_comment(image)
    except DECODE_ERRORS as error:
        notes.append(f"the EXIF data could not be read ({error})")
        return None


def read_parameters(source: Image.Image | bytes | str | os.PathLike, field: str = "image") -> dict[str, Any]:
    """The request dict stored in an image (ours or A1111's); {} when the image has none."""
    return read_image_parameters(source, field).parameters
