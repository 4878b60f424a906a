"""Open untrusted image bytes under bounded memory and time: cheap structural checks before Pillow reads anything.

Pillow copies an EXIF or TIFF tag's value once per tag that points at it, decodes a progressive JPEG once
per scan and walks TIFF page chains in quadratic time. Each of those costs is read here from the file's
structure (chunk and IFD headers only, linear in the file size) and refused over its limit, naming the field.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

from PIL import Image

from kolors_app.core.config import Limits
from kolors_app.core.errors import ValidationError

# Formats worth decoding for a text-to-image app. Restricting them keeps Pillow from handing uploads to
# plugins that call external programs (EPS runs Ghostscript) or that few people ever fuzzed.
ACCEPTED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
FORMAT_NAMES = "PNG, JPEG, WebP, GIF, BMP, TIFF or AVIF"
# Bytes of one TIFF/EXIF value of each type (Pillow's TiffTags.TYPES); unknown types are counted as 1.
TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8,
                   17: 8, 18: 8}
SUB_IFD_TAGS = (0x8769, 0x8825, 0xA005, 0x014A)  # Exif, GPS, Interoperability, SubIFDs
MAX_IFDS = 64
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RAW_EXIF_PROFILE = "Raw profile type exif"
# A JPEG marker is 0xFF then a byte other than 0x00 (a stuffed 0xFF in entropy-coded data), RST0-7 or a fill 0xFF.
JPEG_NOT_MARKERS = frozenset([0x00, 0xFF, *range(0xD0, 0xD8)])
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
JPEG_STANDALONE = frozenset([0x01, 0xD8])  # TEM and SOI carry no length (RSTn are skipped with the scan data)
JPEG_SOS, JPEG_EOI = 0xDA, 0xD9


@dataclass
class Structure:
    """What the structural walk found: the format's family and the raw EXIF block outside Pillow's header read."""

    kind: str
    exif: bytes | None = None


def inspect(data: bytes, limits: Limits, field: str = "image") -> Structure:
    """Walk the file's structure and refuse what would cost Pillow too much memory or time."""
    if data.startswith(PNG_SIGNATURE):
        return _inspect_png(data, limits, field)
    if data[:2] == b"\xff\xd8":
        scans = jpeg_scans(data, limits.max_jpeg_scans)
        if scans > limits.max_jpeg_scans:
            raise ValidationError(field, f"is a JPEG of {scans:,} scans; at most {limits.max_jpeg_scans} allowed")
        return Structure("jpeg")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _inspect_webp(data, limits, field)
    if data[:4] in (b"II*\0", b"MM\0*"):
        pages, cost = tiff_cost(data, 0, limits.max_frames, field, chain=True)
        if pages > limits.max_frames:
            raise ValidationError(field, f"is a TIFF of more than {limits.max_frames} pages; at most "
                                         f"{limits.max_frames} allowed")
        _check_metadata("TIFF tags", cost, limits, field)
        return Structure("tiff")
    if data[:4] in (b"II+\0", b"MM\0+"):
        raise ValidationError(field, f"is a BigTIFF, which this app does not read; use {FORMAT_NAMES}")
    return Structure("other")


def open_image(data: bytes, limits: Limits, field: str = "image") -> Image.Image:
    """The image opened (header only) after every structural check; its checked EXIF bytes ride along."""
    structure = inspect(data, limits, field)
    try:
        image = Image.open(io.BytesIO(data), formats=available_formats())
    except Image.DecompressionBombError:
        raise ValidationError(field, f"has far too many pixels; at most {limits.max_image_pixels:,} allowed") from None
    except Image.UnidentifiedImageError:
        raise ValidationError(field, f"is not an image file this app reads ({FORMAT_NAMES})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
            ZeroDivisionError, MemoryError) as error:
        raise ValidationError(field, f"is a damaged image file ({type(error).__name__})") from None
    icc = image.info.get("icc_profile") or b""
    _check_metadata("ICC profile", len(icc), limits, field)
    exif = image.info.get("exif") or structure.exif
    if exif is None and isinstance(image.info.get(RAW_EXIF_PROFILE), str):
        exif = _raw_profile_bytes(image.info[RAW_EXIF_PROFILE])
    if exif and structure.kind != "tiff":
        check_exif(exif, limits, field)
    image.checked_exif = exif  # read by exif_of(); Pillow's getexif() would look (and decode) elsewhere
    return image


def exif_of(image: Image.Image) -> Image.Exif:
    """The EXIF of an image from open_image(), parsed from the checked bytes without decoding any pixel."""
    if image.format == "TIFF" or not hasattr(image, "checked_exif"):
        return image.getexif()  # a TIFF's own tags (bounded by inspect()), or an image made by this program
    exif = Image.Exif()
    if image.checked_exif:
        exif.load(image.checked_exif)
    return exif


def check_exif(raw: bytes, limits: Limits, field: str) -> None:
    """Refuse an EXIF block whose tags would make Pillow copy more than the metadata limit."""
    body = raw[6:] if raw.startswith(b"Exif\0\0") else raw
    if body[:4] not in (b"II*\0", b"MM\0*"):
        return  # Pillow ignores what is no TIFF structure
    _check_metadata("EXIF data", max(len(body), tiff_cost(body, 0, MAX_IFDS, field)[1]), limits, field)


def tiff_cost(data: bytes, start: int, max_ifds: int, field: str, chain: bool = True) -> tuple[int, int]:
    """(IFDs in the main chain, bytes Pillow would copy for all tag values) of the TIFF structure at `start`."""
    order = "<" if data[start:start + 2] == b"II" else ">"
    view = memoryview(data)[start:]
    size = len(view)

    def unpack(fmt: str, offset: int):
        if offset < 0 or offset + struct.calcsize(fmt) > size:
            return None
        return struct.unpack_from(order + fmt, view, offset)

    first = unpack("L", 4)
    pending, seen, cost, pages = [(first[0] if first else 0, True)], set(), 0, 0
    while pending:
        offset, in_chain = pending.pop()
        if not offset or offset in seen or len(seen) > max_ifds:
            continue
        seen.add(offset)
        pages += in_chain
        entries = unpack("H", offset)
        if entries is None:
            continue
        for index in range(entries[0]):
            entry = unpack("HHLL", offset + 2 + 12 * index)
            if entry is None:
                break
            tag, kind, count, value = entry
            length = count * TIFF_TYPE_SIZES.get(kind, 1)
            if length > 4:
                cost += min(length, max(0, size - value))
            if tag in SUB_IFD_TAGS and kind in (4, 13):
                pending.append((value, False))
        following = unpack("L", offset + 2 + 12 * entries[0])
        if chain and in_chain and following:
            pending.append((following[0], True))
    return pages, cost


def jpeg_scans(data: bytes, limit: int) -> int:
    """The scans (SOS markers) of the first image of a JPEG, counted up to `limit` + 1.

    Segments are walked by their lengths, as libjpeg reads them, so bytes inside an APPn or COM payload are not
    taken for markers; after each scan header the entropy-coded data is skipped to the next real marker.
    """
    position, scans = 2, 0
    while position + 4 <= len(data):
        if data[position] != 0xFF or data[position + 1] in JPEG_NOT_MARKERS:
            found = JPEG_MARKER.search(data, position)  # junk or entropy-coded data: on to the next marker
            if found is None:
                break
            position = found.start()
            continue
        marker = data[position + 1]
        if marker == JPEG_EOI:
            break
        if marker in JPEG_STANDALONE:
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker == JPEG_SOS:
            scans += 1
            if scans > limit:
                break
            found = JPEG_MARKER.search(data, position)
            position = found.start() if found else len(data)
    return scans


def available_formats() -> tuple[str, ...]:
    """The accepted formats this Pillow was built with (AVIF needs libavif)."""
    Image.init()
    return tuple(name for name in ACCEPTED_FORMATS if name in Image.OPEN)


def _check_metadata(what: str, size: int, limits: Limits, field: str) -> None:
    if size > limits.max_metadata_bytes:
        raise ValidationError(field, f"carries {size / 1024 / 1024:.1f} MB of {what}; at most "
                                     f"{limits.max_metadata_bytes / 1024 / 1024:.1f} MB allowed")


def _inspect_png(data: bytes, limits: Limits, field: str) -> Structure:
    position, exif, text_bytes = 8, None, 0
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">L4s", data, position)
        body = data[position + 8:position + 8 + length]
        if kind == b"eXIf" and exif is None:
            exif = bytes(body)
        elif kind in (b"zTXt", b"iTXt", b"tEXt", b"iCCP"):
            text_bytes += length
        elif kind == b"IEND":
            break
        position += 12 + length
    # Compressed text can expand a thousandfold; Pillow caps each chunk at 1 MB and the decoded sum
    # (kolors_app/patches/pillow.py), this caps the sum sent.
    _check_metadata("compressed text", text_bytes, limits, field)
    return Structure("png", exif)


def _inspect_webp(data: bytes, limits: Limits, field: str) -> Structure:
    position, exif, frames = 12, None, 0
    while position + 8 <= len(data):
        kind, length = struct.unpack_from("<4sL", data, position)
        if kind == b"EXIF" and exif is None:
            exif = data[position + 8:position + 8 + length]
        elif kind == b"ICCP":
            _check_metadata("ICC profile", length, limits, field)
        elif kind == b"ANMF":
            frames += 1
        position += 8 + length + (length & 1)
    if frames > limits.max_frames:
        raise ValidationError(field, f"is an animation of {frames:,} frames; at most {limits.max_frames} allowed")
    return Structure("webp", exif)


def _raw_profile_bytes(text: str) -> bytes | None:
    try:
        return bytes.fromhex("".join(text.split("\n")[3:]))
    except ValueError:
        return None
