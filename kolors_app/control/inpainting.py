"""Inpainting and outpainting around the diffusers call: canvas, mask, processing size, and pasting back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from kolors_app.core.request import Inpaint

# diffusers' padding_mask_crop needs a margin; A1111's default "only masked padding" is 32 px.
SIZE_MULTIPLE = 8


@dataclass
class Canvas:
    """What the pipeline is given: the (extended) image, the mask it repaints, and the soft mask to paste with."""

    image: Image.Image
    mask: Image.Image  # "L", white = repaint, blurred; the pipeline binarises it at 0.5
    width: int
    height: int


def extend(image: Image.Image, mask: Image.Image | None, sides: tuple[int, int, int, int]):
    """Outpainting: grow the canvas by (left, right, up, down) pixels, the new area filled from the edges and masked."""
    left, right, up, down = sides
    pixels = np.asarray(image.convert("RGB"))
    grown = np.pad(pixels, ((up, down), (left, right), (0, 0)), mode="edge")
    old = np.asarray(mask.convert("L")) if mask is not None else np.zeros(pixels.shape[:2], np.uint8)
    new_mask = np.pad(old, ((up, down), (left, right)), mode="constant", constant_values=255)
    return Image.fromarray(grown), Image.fromarray(new_mask)


def processing_size(size: tuple[int, int], width: int, height: int, low: int, high: int) -> tuple[int, int]:
    """The canvas's aspect ratio at about width x height pixels, in multiples of 8 within [low, high]."""
    canvas_width, canvas_height = size
    if canvas_width * height == canvas_height * width:
        return width, height
    scale = (width * height / (canvas_width * canvas_height)) ** 0.5

    def side(value: float) -> int:
        return int(min(high, max(low, round(value * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)))

    return side(canvas_width), side(canvas_height)


def prepare(image: Image.Image, inpaint: Inpaint, width: int, height: int, low: int, high: int) -> Canvas:
    """The canvas for one inpainting run."""
    image = image.convert("RGB")
    mask = inpaint.mask
    if any(inpaint.outpaint):
        image, mask = extend(image, mask, inpaint.outpaint)
    mask = mask.convert("L")
    if inpaint.mask_blur:
        mask = mask.filter(ImageFilter.GaussianBlur(inpaint.mask_blur))
    if inpaint.area == "masked":
        # diffusers crops around the mask and expands the crop to width x height's aspect itself.
        return Canvas(image, mask, width, height)
    return Canvas(image, mask, *processing_size(image.size, width, height, low, high))


def paste_back(result: Image.Image, canvas: Canvas, keep_unmasked: bool) -> Image.Image:
    """The result at the canvas's size; with keep_unmasked, every pixel the mask leaves alone is the original's."""
    if result.size != canvas.image.size:
        result = result.resize(canvas.image.size, Image.Resampling.LANCZOS)
    if not keep_unmasked:
        return result
    return Image.composite(result.convert("RGB"), canvas.image, canvas.mask)


def has_masked_pixels(mask: Image.Image) -> bool:
    """Whether anything is to be repainted."""
    return mask.convert("L").getextrema()[1] > 0
