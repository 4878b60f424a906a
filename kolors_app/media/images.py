"""Make any uploaded image safe and RGB before model work: sizes checked first, then decoded, turned, converted."""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
import urllib.parse
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps

from kolors_app.core.config import Limits
from kolors_app.media.image_guard import FORMAT_NAMES, available_formats, exif_of, open_image
from kolors_app.core.errors import ValidationError

# Pillow raises many kinds of exceptions on hostile or damaged files; these are the ones decoding can give.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
                 ZeroDivisionError)
# A URL scheme needs two letters or more, so that "C:\\photo.png" stays a path.
URL_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]+:")
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
TRANSPARENT_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
WHITE = (255, 255, 255)
EXIF_ORIENTATION = 0x0112
EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                  5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                  8: Image.Transpose.ROTATE_90}


def load_image(source, limits: Limits | None = None, *, field: str = "image",
               allowed_roots: Iterable[str | os.PathLike] = ()) -> Image.Image:
    """An RGB image from a PIL image, bytes, a `data:` URL or a path inside `allowed_roots`.

    Sizes are checked before decoding: bytes against `limits.max_upload_bytes`, the header's width x
    height against `limits.max_image_pixels`. URLs are refused, never fetched. Paths are refused unless
    they resolve (symlinks and `..` followed) inside one of `allowed_roots`. Every problem is a
    ValidationError naming `field`.
    """
    limits = limits or Limits()
    if isinstance(source, Image.Image):
        check_pixels(source.size, limits, field)
        return _normalise(source, field)
    if isinstance(source, (bytes, bytearray, memoryview)):
        check_upload_size(len(source), limits.max_upload_bytes, field)
        data = bytes(source)
    elif isinstance(source, str) and source[:5].lower() == "data:":
        data = decode_data_url(source, limits.max_upload_bytes, field)
    elif isinstance(source, str) and URL_PATTERN.match(source):
        raise ValidationError(field, "URLs are not accepted; upload the image file instead")
    elif isinstance(source, (str, os.PathLike)):
        data = read_allowed_file(source, allowed_roots, limits.max_upload_bytes, field)
    elif source is None:
        raise ValidationError(field, "an image is required")
    else:
        raise ValidationError(field, f"must be an image, got {type(source).__name__}")
    check_upload_size(len(data), limits.max_upload_bytes, field)
    return decode_image(data, limits, field)


def check_upload_size(size: int, max_bytes: int, field: str) -> None:
    """Refuse more than `max_bytes` bytes."""
    if size > max_bytes:
        raise ValidationError(field, f"is {_megabytes(size)}; at most {_megabytes(max_bytes)} allowed")


def check_pixels(size: tuple[int, int], limits: Limits, field: str) -> None:
    """Refuse images with more than `limits.max_image_pixels` pixels."""
    width, height = size
    if width * height > limits.max_image_pixels:
        raise ValidationError(field, f"is {width}x{height} ({width * height:,} pixels); "
                                     f"at most {limits.max_image_pixels:,} pixels allowed")


def _megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def decode_data_url(text: str, max_bytes: int, field: str = "image") -> bytes:
    """The bytes of a `data:image/...` URL; the size is checked before anything is decoded."""
    header, comma, payload = text.partition(",")
    if not comma:
        raise ValidationError(field, "is not a valid data URL (no comma)")
    options = [part.strip().lower() for part in header[5:].split(";")]
    media_type, is_base64 = options[0], "base64" in options[1:]
    if media_type == "image/svg+xml":
        raise ValidationError(field, f"SVG images are not supported; use {FORMAT_NAMES}")
    if not media_type.startswith("image/"):
        raise ValidationError(field, f"must be a data:image/ URL, got data:{media_type or 'text/plain'}")
    if is_base64:
        padding = len(payload) - len(payload.rstrip("="))
        check_upload_size(len(payload) * 3 // 4 - padding, max_bytes, field)
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as error:
            raise ValidationError(field, f"holds invalid base64 data ({error})") from None
    # Percent-encoding only ever shrinks, so the text length bounds the work before decoding.
    check_upload_size(len(payload) // 3, max_bytes, field)
    data = urllib.parse.unquote_to_bytes(payload)
    check_upload_size(len(data), max_bytes, field)
    return data


def resolve_allowed_path(path: str | os.PathLike, allowed_roots: Iterable[str | os.PathLike],
                         field: str = "image") -> Path:
    """The real path of `path` when it lies inside one of `allowed_roots`; ValidationError otherwise."""
    roots = [Path(os.path.realpath(root)) for root in allowed_roots]
    if not roots:
        raise ValidationError(field, "reading files from the server is not allowed; upload the image instead")
    try:
        resolved = Path(os.path.realpath(path))
    except (OSError, ValueError) as error:
        raise ValidationError(field, f"is not a usable path ({error})") from None
    if not any(resolved.is_relative_to(root) for root in roots):
        raise ValidationError(field, "is outside the folders images may be read from")
    if not resolved.is_file():
        raise ValidationError(field, f"no such file: {Path(path).name}")
    return resolved


def read_allowed_file(path: str | os.PathLike, allowed_roots: Iterable[str | os.PathLike], max_bytes: int,
                      field: str = "image") -> bytes:
    """The bytes of a file inside `allowed_roots`, refused before reading when larger than `max_bytes`."""
    resolved = resolve_allowed_path(path, allowed_roots, field)
    try:
        with open(resolved, "rb") as file:
            check_upload_size(os.fstat(file.fileno()).st_size, max_bytes, field)
            # Read one byte more than allowed, so a file that grew since fstat is still caught.
            return file.read(max_bytes + 1)
    except OSError as error:
        raise ValidationError(field, f"could not be read ({error.strerror or error})") from None


def decode_image(data: bytes, limits: Limits, field: str = "image") -> Image.Image:
    """Decode image bytes to RGB: structure checked (image_guard), then the header's pixel count, then pixels."""
    image = open_image(data, limits, field)
    with image:
        check_pixels(image.size, limits, field)
        return _normalise(image, field)


def load_image_and_alpha(data: bytes, limits: Limits, field: str = "image") -> tuple[Image.Image, Image.Image | None]:
    """RGB (as decode_image) and the alpha channel ("L"; None without transparency), checked like every upload.

    For masks given by transparency (OpenAI's image edits): the transparent area is what is repainted.
    """
    check_upload_size(len(data), limits.max_upload_bytes, field)
    image = open_image(data, limits, field)
    with image:
        check_pixels(image.size, limits, field)
        return _normalise(image, field, keep_alpha=True)


def _available_formats() -> tuple[str, ...]:
    return available_formats()


def _normalise(image: Image.Image, field: str, keep_alpha: bool = False):
    try:
        # The first frame only; tell(), not n_frames, which walks a whole TIFF page chain, GIF or APNG.
        if image.tell():
            image.seek(0)
        image.load()
        upright = _upright(image, exif_of(image))
        rgb = to_rgb(upright)
        rgb.info.pop("exif", None)  # the orientation is applied; the rest of the EXIF is not ours to keep
        if not keep_alpha:
            return rgb
        transparent = upright.mode in TRANSPARENT_MODES or "transparency" in upright.info
        return rgb, upright.convert("RGBA").getchannel("A") if transparent else None
    except MemoryError:
        raise ValidationError(field, "needs more memory to decode than this server has free") from None
    except DECODE_ERRORS as error:
        raise ValidationError(field, f"is damaged or truncated and cannot be decoded ({error})") from None


def _upright(image: Image.Image, exif: Image.Exif) -> Image.Image:
    # ImageOps.exif_transpose would read the EXIF again through getexif(), unchecked.
    method = EXIF_TRANSPOSE.get(exif.get(EXIF_ORIENTATION))
    return image.transpose(method) if method is not None else image


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy: transparency composited on white, 16-bit and float images scaled, not clipped."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        return Image.fromarray(_to_8_bit(image), "L").convert("RGB")
    if image.mode in TRANSPARENT_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _to_8_bit(image: Image.Image) -> np.ndarray:
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        # Float images hold 0..1 by convention; those with larger values are taken as 0..255.
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        values = values * scale
    else:
        # 16-bit samples (also the 32-bit "I" mode Pillow gives them): 65535 maps to 255.
        values = np.clip(values, 0, 65535) / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """The image scaled to cover width x height and centre-cropped to it (A1111's 'crop and resize')."""
    if image.size == (width, height):
        return image
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


def size_for(image_size: tuple[int, int], megapixels: float = 1.0, multiple: int = 64,
             limits: Limits | None = None) -> tuple[int, int]:
    """A generation size of about `megapixels` with the image's aspect ratio, in multiples of 64, within limits."""
    limits = limits or Limits()
    width, height = image_size
    scale = (megapixels * 1024 * 1024 / (width * height)) ** 0.5
    # A panorama would otherwise get a side past max_size, and the next Generate would be refused.
    scale = min(scale, limits.max_size / width, limits.max_size / height)
    low = -(-limits.min_size // multiple) * multiple
    high = limits.max_size // multiple * multiple

    def side(length: float) -> int:
        return min(high, max(low, round(length * scale / multiple) * multiple))

    return side(width), side(height)


def header_size(path, limits: Limits | None = None, field: str = "image",
                allowed_roots: Iterable[str | os.PathLike] = ()) -> tuple[int, int]:
    """Width and height of a file inside `allowed_roots`, read after the structural checks, no pixel decoded."""
    limits = limits or Limits()
    data = read_allowed_file(path, allowed_roots, limits.max_upload_bytes, field)
    with open_image(data, limits, field) as image:
        check_pixels(image.size, limits, field)
        return image.size
