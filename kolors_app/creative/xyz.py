"""X/Y/Z plot: axes over request parameters (A1111's range syntax), run cell by cell, one labelled grid image."""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image, ImageDraw, ImageFont

from kolors_app.core.errors import ValidationError
from kolors_app.core.schedulers import SCHEDULER_NAMES

log = logging.getLogger(__name__)

# The grid's size is bounded by the server's work budget (kolors_app/serving/quotas.py: 2600 megapixel-steps locally,
# 300 in public); this bounds the labelled grid image, which holds every cell at once.
MAX_GRID_MEGAPIXELS = 256
MEGAPIXEL = 1024 * 1024
# Cells planned at most: past this no budget could run them (each costs the engine's CELL_WORK at least).
MAX_CELLS = 4096
MAX_VALUES = 32
# A1111: "1-5", "1-5 (+2)", "10-1 (-3)", "1-10 [5]" (5 values spread evenly), with ints or floats.
RANGE = re.compile(r"^\s*(-?\d+(?:\.\d*)?)\s*-\s*(-?\d+(?:\.\d*)?)"
                   r"(?:\s*\(\s*([+-]\s*\d+(?:\.\d*)?)\s*\)|\s*\[\s*(\d+)\s*\])?\s*$")
FONT_CANDIDATES = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
                   "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
                   "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
                   "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc")


def _set_lora_weight(params: dict, value: float) -> None:
    if not params.get("loras"):
        raise ValidationError("xyz", "a LoRA weight axis needs at least one LoRA in the request")
    params["loras"][0] = {**params["loras"][0], "weight": value}


def _set_control_scale(params: dict, value: float) -> None:
    units = params.get("control_units") or params.get("controlnets")
    if not units:
        raise ValidationError("xyz", "a ControlNet scale axis needs a ControlNet unit in the request")
    units[0] = {**units[0], "conditioning_scale": value}


def _set_hires_strength(params: dict, value: float) -> None:
    if "hires_upscale" not in params:  # the flat parameters of a request with the hires fix on have it
        raise ValidationError("xyz", "a hires strength axis needs the hires fix turned on")
    params["hires_denoising_strength"] = value


@dataclass(frozen=True)
class AxisKind:
    """What an axis varies: its label (as A1111 names it), value type and how a value is put into the parameters."""

    label: str
    kind: type
    apply: Callable[[dict, Any], None]


def _setter(key: str):
    def apply(params: dict, value) -> None:
        params[key] = value

    return apply


AXES = {
    "seed": AxisKind("Seed", int, _setter("seed")),
    "steps": AxisKind("Steps", int, _setter("num_inference_steps")),
    "guidance": AxisKind("CFG Scale", float, _setter("guidance_scale")),
    "sampler": AxisKind("Sampler", str, _setter("scheduler")),
    "prompt_sr": AxisKind("Prompt S/R", str, lambda params, value: None),  # applied with the axis's first value
    "lora_weight": AxisKind("LoRA weight", float, _set_lora_weight),
    "ip_adapter_scale": AxisKind("IP-Adapter scale", float, _setter("ip_adapter_scale")),
    "controlnet_scale": AxisKind("ControlNet scale", float, _set_control_scale),
    "hires_strength": AxisKind("Hires denoising strength", float, _set_hires_strength),
}


@dataclass
class Axis:
    """One axis: its kind and its values (parsed from A1111's text)."""

    kind: str
    values: list

    @property
    def label(self) -> str:
        """A1111's name of the axis."""
        return AXES[self.kind].label


def parse_values(kind: str, text: str, field_name: str = "x") -> list:
    """The values of an axis from text as A1111 writes it: `1-5 (+2)`, `5,6.5,8`, `1-10 [5]`, `"a, b", c`."""
    if kind not in AXES:
        raise ValidationError(f"{field_name}_type", f"must be one of {', '.join(AXES)}, got {kind!r}")
    value_type = AXES[kind].kind
    items = [item.strip() for item in next(csv.reader(io.StringIO(text or ""), skipinitialspace=True), [])
             if item.strip()]
    if not items:
        raise ValidationError(f"{field_name}_values", "is empty")
    values: list = []
    for item in items:
        match = RANGE.match(item) if value_type is not str else None
        if match:
            values.extend(_expand(match, value_type, f"{field_name}_values"))
        else:
            values.append(_convert(item, value_type, f"{field_name}_values"))
        if len(values) > MAX_VALUES:
            raise ValidationError(f"{field_name}_values", f"at most {MAX_VALUES} values per axis")
    if kind == "sampler":
        for value in values:
            if value not in SCHEDULER_NAMES:
                raise ValidationError(f"{field_name}_values", f"unknown sampler {value!r}; known: "
                                                              f"{', '.join(SCHEDULER_NAMES)}")
    if kind == "prompt_sr" and len(values) < 2:
        raise ValidationError(f"{field_name}_values", "Prompt S/R needs the word to find, then its replacements")
    return values


def _convert(item: str, value_type: type, field_name: str):
    try:
        number = float(item) if value_type is not str else item
    except ValueError:
        raise ValidationError(field_name, f"{item!r} is not a number") from None
    if value_type is int:
        if not float(number).is_integer():
            raise ValidationError(field_name, f"{item!r} is not a whole number")
        return int(number)
    return number


def _expand(match: re.Match, value_type: type, field_name: str) -> list:
    start, end = float(match.group(1)), float(match.group(2))
    if match.group(4):  # [count]: evenly spaced, both ends included
        count = int(match.group(4))
        if count < 1 or count > MAX_VALUES:
            raise ValidationError(field_name, f"[{count}] must be from 1 to {MAX_VALUES}")
        values = [start + (end - start) * i / max(count - 1, 1) for i in range(count)]
    else:
        step = float(match.group(3).replace(" ", "")) if match.group(3) else (1.0 if end >= start else -1.0)
        if step == 0 or (end - start) * step < 0:
            raise ValidationError(field_name, f"step {step:g} never goes from {start:g} to {end:g}")
        count = int(math.floor((end - start) / step + 1e-9)) + 1
        if count > MAX_VALUES:
            raise ValidationError(field_name, f"at most {MAX_VALUES} values per axis, the range gives {count}")
        values = [start + i * step for i in range(count)]
    if value_type is int:
        return [int(round(value)) for value in values]
    return [round(value, 6) for value in values]


@dataclass
class Cell:
    """One image of the grid: its position and the parameters that make it."""

    x: int
    y: int
    z: int
    params: dict
    image: Image.Image | None = None
    result_params: dict | None = None


def plan_cells(base: dict, axes: list[Axis | None]) -> list[Cell]:
    """Every cell's parameters (z outermost, then y, then x, as A1111 runs them); too large a grid is refused.

    The work of the whole plot is the job engine's to count (kolors_app/engine/cost.py).
    """
    x, y, z = (list(axes) + [None, None, None])[:3]
    sizes = [len(axis.values) if axis else 1 for axis in (x, y, z)]
    if base.get("seed") in (None, -1):
        raise ValidationError("seed", "an X/Y/Z plot needs a fixed seed, so that only the axes change the image")
    if math.prod(sizes) > MAX_CELLS:
        letter = "xyz"[max(range(3), key=lambda i: sizes[i])]
        raise ValidationError(f"{letter}_values", f"{sizes[0]}x{sizes[1]}x{sizes[2]} = {math.prod(sizes)} cells; at "
                                                  f"most {MAX_CELLS} in one plot",
                              code="too_many", allowed={"max": MAX_CELLS})
    cells = []
    for iz in range(sizes[2]):
        for iy in range(sizes[1]):
            for ix in range(sizes[0]):
                params = copy.deepcopy(base)
                params["num_images"] = 1
                for axis, index in ((x, ix), (y, iy), (z, iz)):
                    if axis is not None:
                        _apply(params, axis, index)
                cells.append(Cell(ix, iy, iz, params))
    _check_size(cells, sizes)
    return cells


def _check_size(cells: list[Cell], sizes: list[int]) -> None:
    """Refuse too large a grid image, naming the axis with the most values."""
    letter = "xyz"[max(range(3), key=lambda i: sizes[i])]
    shape = f"{sizes[0]}x{sizes[1]}x{sizes[2]} = {len(cells)} cells"
    pixels = sum(cell.params.get("width", 1024) * cell.params.get("height", 1024) for cell in cells) / MEGAPIXEL
    if pixels > MAX_GRID_MEGAPIXELS:
        raise ValidationError(f"{letter}_values", f"{shape} make a grid of {pixels:,.0f} megapixels; at most "
                                                  f"{MAX_GRID_MEGAPIXELS} in one grid image: fewer values or a "
                                                  "smaller size")


def _apply(params: dict, axis: Axis, index: int) -> None:
    value = axis.values[index]
    if axis.kind == "prompt_sr":
        search = axis.values[0]
        if search not in params.get("prompt", "") and search not in params.get("negative_prompt", ""):
            raise ValidationError("xyz", f"Prompt S/R: {search!r} is not in the prompt")
        params["prompt"] = params.get("prompt", "").replace(search, value)
        params["negative_prompt"] = params.get("negative_prompt", "").replace(search, value)
        return
    AXES[axis.kind].apply(params, value)


@dataclass
class GridResult:
    """The finished cells (all, or those before Stop) and the labelled grid image."""

    cells: list[Cell]
    grid: Image.Image | None
    stopped: bool = False
    warnings: list[str] = field(default_factory=list)


def run_grid(cells: list[Cell], run_cell: Callable[[dict], tuple[Image.Image, dict] | None],
             axes: list[Axis | None], on_progress: Callable[[int, int], None] | None = None,
             stop: threading.Event | None = None) -> GridResult:
    """Run the cells in order; Stop keeps the finished ones (the grid shows them, the rest blank)."""
    done = []
    stopped = False
    for number, cell in enumerate(cells):
        if stop is not None and stop.is_set():
            stopped = True
            break
        result = run_cell(cell.params)
        if result is None:  # stopped inside the cell
            stopped = True
            break
        cell.image, cell.result_params = result
        done.append(cell)
        if on_progress:
            on_progress(number + 1, len(cells))
    grid = grid_image(cells, axes) if done else None
    return GridResult(done, grid, stopped)


def format_value(axis: Axis | None, value) -> str:
    """An axis value as its label shows it."""
    if axis is None:
        return ""
    if isinstance(value, float):
        return f"{axis.label}: {value:g}"
    return f"{axis.label}: {value}"


def find_font() -> tuple[str | None, str]:
    """A font file with Chinese glyphs (Noto CJK from fonts-noto-cjk), or None and a note."""
    for path in FONT_CANDIDATES:
        if Path(path).is_file():
            return path, ""
    if shutil.which("fc-match"):
        try:
            found = subprocess.run(["fc-match", "-f", "%{file}", "sans-serif:lang=zh-cn"], capture_output=True,
                                   text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            found = ""
        if found and Path(found).is_file():
            return found, ""
    return None, "no CJK font found (install fonts-noto-cjk); grid labels use PIL's default font"


def _font(size: int):
    path, note = find_font()
    if path is None:
        log.warning(note)
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size)


def grid_image(cells: list[Cell], axes: list[Axis | None]) -> Image.Image:
    """The cells in an x-by-y grid per z (z grids side by side), axis values written above and to the left."""
    x, y, z = (list(axes) + [None, None, None])[:3]
    images = [cell.image for cell in cells if cell.image is not None]
    width, height = images[0].size
    columns, rows, layers = (len(axis.values) if axis else 1 for axis in (x, y, z))
    font = _font(max(14, width // 16))
    pad = font.size // 2
    top = (font.size + 2 * pad) * ((x is not None) + (z is not None))
    left_labels = [format_value(y, value) for value in (y.values if y else [])]
    left = max((int(font.getlength(label)) for label in left_labels), default=0) + (2 * pad if y else 0)
    left = min(left, width)
    layer_width = columns * width
    canvas = Image.new("RGB", (left + layers * layer_width + (layers - 1) * pad, top + rows * height), "white")
    draw = ImageDraw.Draw(canvas)
    for iz in range(layers):
        origin = left + iz * (layer_width + pad)
        if z is not None:
            draw.text((origin + layer_width / 2, pad), format_value(z, z.values[iz]), fill="black", font=font,
                      anchor="mt")
        if x is not None:
            row_y = top - font.size - pad
            for ix, value in enumerate(x.values):
                draw.text((origin + ix * width + width / 2, row_y), format_value(x, value), fill="black", font=font,
                          anchor="mt")
    for iy, label in enumerate(left_labels):
        draw.text((left - pad, top + iy * height + height / 2), label, fill="black", font=font, anchor="rm")
    for cell in cells:
        if cell.image is not None:
            origin = left + cell.z * (layer_width + pad)
            canvas.paste(cell.image.resize((width, height)), (origin + cell.x * width, top + cell.y * height))
    return canvas


def describe(axes: list[Axis | None]) -> dict[str, str]:
    """A1111's infotext for a grid: X Type / X Values and so on."""
    info = {"Script": "X/Y/Z plot"}
    for letter, axis in zip("XYZ", axes):
        if axis is not None:
            info[f"{letter} Type"] = axis.label
            info[f"{letter} Values"] = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in axis.values)
    return info
