"""Hostile image files made on the spot (finding by finding of issue 10); small code, no committed binaries."""

import io
import struct

from PIL import Image

from image_bytes import encoded, png_bomb  # noqa: F401  (png_bomb re-exported for the tests)


def exif_block(tags: int, block: int) -> bytes:
    """A TIFF/EXIF structure whose `tags` tags all point at one `block`-byte value (Pillow copies it per tag)."""
    entries_start = 8
    data_offset = entries_start + 2 + 12 * tags + 4
    entries = b"".join(struct.pack("<HHLL", 0x9000 + index, 7, block, data_offset) for index in range(tags))
    return b"II*\0" + struct.pack("<L", entries_start) + struct.pack("<H", tags) + entries + b"\0\0\0\0" \
        + b"\0" * block


def image_with_exif(format: str, exif: bytes) -> bytes:
    return encoded(Image.new("RGB", (32, 32), (10, 120, 200)), format, exif=b"Exif\0\0" + exif)


def tiff_exif_bomb(tags: int, block: int) -> bytes:
    """A 1x1 grey TIFF whose IFD also holds `tags` private tags all pointing at one `block`-byte value."""
    base = [(256, 4, 1, 1), (257, 4, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 0),
            (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, 1, 1)]
    count = len(base) + tags
    pixel_offset = 8 + 2 + 12 * count + 4
    block_offset = pixel_offset + 2
    entries = [(tag, kind, n, pixel_offset if tag == 273 else value) for tag, kind, n, value in base]
    entries += [(40000 + index, 7, block, block_offset) for index in range(tags)]
    body = b"".join(struct.pack("<HHL", tag, kind, n) + (struct.pack("<HH", value, 0) if kind == 3 and n == 1
                                                          else struct.pack("<L", value))
                    for tag, kind, n, value in entries)
    return b"II*\0" + struct.pack("<L", 8) + struct.pack("<H", count) + body + b"\0\0\0\0" + b"\x80\0" \
        + b"\0" * block


def tiff_page_chain(pages: int) -> bytes:
    """A TIFF of `pages` 1x1 grey pages chained one after another."""
    out = bytearray(b"II*\0" + struct.pack("<L", 8))
    for page in range(pages):
        start = len(out)
        pixel = start + 2 + 12 * 9 + 4
        entries = [(256, 4, 1, 1), (257, 4, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
                   (273, 4, 1, pixel), (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, 1, 1)]
        out += struct.pack("<H", len(entries))
        for tag, kind, n, value in entries:
            out += struct.pack("<HHL", tag, kind, n) + (struct.pack("<HH", value, 0) if kind == 3
                                                        else struct.pack("<L", value))
        following = pixel + 2 if page + 1 < pages else 0
        out += struct.pack("<L", following) + b"\x80\0"
    return bytes(out)


def jpeg_many_scans(scans: int, size: int = 512) -> bytes:
    """A progressive JPEG with `scans` extra empty AC scans inserted before its end marker."""
    data = encoded(Image.new("RGB", (size, size), (90, 90, 90)), "JPEG", progressive=True, quality=80)
    empty_scan = b"\xff\xda\x00\x08\x01\x01\x00\x01\x3f\x00"
    return data[:-2] + empty_scan * scans + b"\xff\xd9"


def png_without_text(side: int) -> bytes:
    """A huge grey PNG that compresses to almost nothing and carries no text (PNG info's worst case)."""
    return png_bomb(side, side)


def as_file(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)
