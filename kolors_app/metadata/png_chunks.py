"""Parameters inside image files: the two PNG chunks written atomically, and read back from PNG, JPEG and WebP."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from kolors_app.core.config import Limits
from kolors_app.core.errors import ValidationError
from kolors_app.core.schema import clean_parameters
from kolors_app.media.image_guard import exif_of, open_image
from kolors_app.media.images import DECODE_ERRORS
from kolors_app.media.png_encoder import encode_png
from kolors_app.metadata.infotext import PARAMETERS_KEY, ImageParameters, format_parameters, parse_parameters

JSON_KEY = "kolors_studio"  # our iTXt chunk: the flat parameters as JSON
EXIF_IFD = 0x8769
EXIF_USER_COMMENT = 0x9286


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
