"""AUTOMATIC1111's `parameters` text: our flat parameters written as A1111 writes them, and A1111's text read back."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from kolors_app.core.request import MODEL_NAME, MODES
from kolors_app.core.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES
from kolors_app.core.schema_rules import MAX_MODEL_CHARS
from kolors_app.metadata.control_infotext import control_pairs, read_control_labels
from kolors_app.metadata.creative_infotext import from_infotext, infotext_pairs, infotext_prompts
from kolors_app.metadata.settings_line import number_text, quote, settings_pairs, unquote

PARAMETERS_KEY = "parameters"  # the PNG text chunk A1111 writes this text into
# Our request key ("size" is width x height) -> A1111 infotext label.
LABELS = {"num_inference_steps": "Steps", "scheduler": "Sampler", "guidance_scale": "CFG scale", "seed": "Seed",
          "size": "Size", "num_images": "Batch size", "model": "Model", "strength": "Denoising strength",
          "ip_adapter_scale": "IP-Adapter scale", "mode": "Mode"}
NEGATIVE_PREFIX = "Negative prompt:"
SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")
# A1111 schedule types that our scheduler names spell as a suffix; "Automatic" means the sampler's own.
SCHEDULE_SUFFIXES = {"karras": " Karras"}
PLAIN_SCHEDULES = {"", "automatic", "default"}
HIRES_PREFIX = "Hires"


@dataclass
class ImageParameters:
    """What an image says about how it was made."""

    parameters: dict[str, Any]
    text: str | None = None  # the raw A1111 text, when the image has one
    source: str | None = None  # "kolors_studio" (our JSON chunk), "parameters", "exif" or None
    warnings: list[str] = field(default_factory=list)


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
    labelled += infotext_pairs(params)  # Hires ..., Lora hashes
    pairs = ", ".join([f"{label}: {quote(number_text(value))}" for label, value in labelled]
                      + [f"{label}: {text}" for label, text in control_pairs(params)])
    prompt, negative = infotext_prompts(params)  # what ran: styles applied, {a|b} drawn
    lines = [prompt]
    if negative:
        lines.append(f"{NEGATIVE_PREFIX} {negative}")
    lines.append(pairs)
    return "\n".join(lines)


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
