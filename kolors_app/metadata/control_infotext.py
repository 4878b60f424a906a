"""ControlNet units and inpainting settings in A1111's infotext (sd-webui-controlnet's `ControlNet N: "..."` layout)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from kolors_app.core.request import CONTROL_TYPES, MAX_CONTROL_UNITS, OUTPAINT_SIDES, control_name
from kolors_app.core.addons import CONTROLNET_REPOS
from kolors_app.metadata.settings_line import settings_pairs, unquote

# Our flat inpaint key -> A1111 label (A1111 writes "Mask blur" and "Masked area padding" too).
INPAINT_LABELS = {"mask_blur": "Mask blur", "inpaint_area": "Inpaint area", "inpaint_padding": "Masked area padding",
                  "inpaint_model": "Inpaint model", "keep_unmasked": "Keep unmasked",
                  **{f"outpaint_{side}": f"Outpaint {side}" for side in OUTPAINT_SIDES}}
AREA_TEXT = {"whole": "Whole picture", "masked": "Only masked"}
# Unit attribute -> label inside the quoted unit text.
# sd-webui-controlnet writes a model as "name [hash]".
MODEL_HASH = re.compile(r"\s*\[[0-9a-fA-F]+\]$")
UNIT_LABELS = {"scale": "Weight", "start": "Guidance Start", "end": "Guidance End", "low_threshold": "Threshold A",
               "high_threshold": "Threshold B"}


def control_pairs(params: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs for the inpainting settings and each control unit of a parameter dict."""
    pairs = []
    if params.get("mode") == "inpaint":
        for key, label in INPAINT_LABELS.items():
            value = params.get(key)
            if value is None or (key.startswith("outpaint_") and not value):
                continue
            text = AREA_TEXT.get(value, value) if key == "inpaint_area" else value
            pairs.append((label, str(text)))
    for index in range(MAX_CONTROL_UNITS):
        kind = params.get(control_name("type", index))
        if kind in (None, "none"):
            continue
        module = kind if params.get(control_name("preprocess", index), True) else "none"
        inner = [("Module", module), ("Model", CONTROLNET_REPOS.get(kind, kind).split("/")[-1])]
        inner += [(label, repr(float(v)) if isinstance(v := params.get(control_name(attribute, index)), float)
                   else str(v)) for attribute, label in UNIT_LABELS.items()
                  if params.get(control_name(attribute, index)) is not None]
        pairs.append((f"ControlNet {index}", json.dumps(", ".join(f"{k}: {v}" for k, v in inner))))
    return pairs


def read_control_labels(labels: dict[str, str], found: dict[str, Any], notes: list[str]) -> None:
    """Put the inpainting settings and control units of A1111 labels into `found` (our flat keys)."""
    for key, label in INPAINT_LABELS.items():
        if label not in labels:
            continue
        text = labels[label]
        if key == "inpaint_area":
            found[key] = {v: k for k, v in AREA_TEXT.items()}.get(text, text)
        elif key == "keep_unmasked":
            found[key] = text == "True"
        elif key == "inpaint_model":
            found[key] = text
        elif text.isascii() and text.isdigit():  # str.isdigit() also takes "²", which int() refuses
            found[key] = int(text)
        else:
            notes.append(f"{label} {text!r} is not a whole number; left at its default")
    index = 0
    for label in sorted(name for name in labels if name.startswith("ControlNet ")):
        inner = dict((k, unquote(v.strip())) for k, v in settings_pairs(unquote(labels[label])))
        model = MODEL_HASH.sub("", inner.get("Model", "")).strip()
        if not model:
            notes.append(f"{label} names no Model; left out")
            continue
        kind = next((k for k, repo in CONTROLNET_REPOS.items()
                     if model.lower() in (repo.lower(), repo.split("/")[-1].lower())), None)
        if kind is None and inner.get("Module") in CONTROL_TYPES:
            kind = inner["Module"]  # an SD ControlNet of a kind Kolors has: its settings still apply
        if kind is None or index >= MAX_CONTROL_UNITS:
            notes.append(f"{label} ({inner.get('Model', '?')}) is not a Kolors ControlNet; left out")
            continue
        found[control_name("type", index)] = kind
        found[control_name("preprocess", index)] = inner.get("Module", kind) != "none"
        for attribute, name in UNIT_LABELS.items():
            if name in inner:
                try:
                    number = float(inner[name])
                    if not math.isfinite(number):
                        raise ValueError
                except ValueError:
                    notes.append(f"{label} {name} {inner[name]!r} is not a number; left at its default")
                    continue
                found[control_name(attribute, index)] = round(number) if "threshold" in attribute else number
        index += 1
