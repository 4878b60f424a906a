"""PNG encoding of finished images in a few milliseconds: the "Up" row filter and a fast deflate, in parallel pieces.

Pillow's encoder chooses a filter for every row, which costs as much as the deflate itself (its level 0 still
takes about 50 ms at 1024 px). Generated images compress about as well with the Up filter alone, which numpy applies
in one subtraction. The deflate is ISA-L's (the `isal` package: level 1 is 3-4 times as fast as zlib's and makes
smaller files), or zlib's where isal is missing. The stream is cut into pieces compressed on several threads (both
release the GIL), each primed with the previous 32 kB as pigz does, so the file is one ordinary zlib stream.
Text chunks come from Pillow's PngInfo; modes other than L, RGB and RGBA go to Pillow's encoder.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, PngImagePlugin

try:
    from isal import isal_zlib as deflate
except ImportError:  # no wheel for this platform: zlib, about 3 times slower
    deflate = zlib

COLOR_TYPES = {"L": 0, "RGB": 2, "RGBA": 6}
UP_FILTER = 2
WINDOW = 32 * 1024  # deflate's window: each piece may refer this far back into the one before
PIECE_BYTES = 256 * 1024  # below this a piece's thread costs more than it saves
LEVEL = 1  # the fastest level that still looks for matches (isal: 0-3, zlib: 0-9)


def encode_png(image: Image.Image, info: PngImagePlugin.PngInfo | None = None) -> bytes:
    """The image as PNG bytes with the text chunks of `info`; pixels and chunks read back as Pillow's would."""
    if image.mode not in COLOR_TYPES:
        buffer = io.BytesIO()
        image.save(buffer, "PNG", pnginfo=info, compress_level=LEVEL)
        return buffer.getvalue()
    rows = np.asarray(image, dtype=np.uint8).reshape(image.height, -1)
    filtered = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = UP_FILTER
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG's does
    raw = memoryview(filtered.reshape(-1))
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", image.width, image.height, 8, COLOR_TYPES[image.mode], 0, 0, 0))]
    extra = list(info.chunks) if info is not None else []
    chunks += [(kind, data) for kind, data, *after in extra if not (after and after[0])]
    chunks.append((b"IDAT", _zlib_stream(raw)))
    chunks += [(kind, data) for kind, data, *after in extra if after and after[0]]
    chunks.append((b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))
        for kind, data in chunks)


def _zlib_stream(raw: memoryview) -> bytes:
    """One zlib stream of `raw`, its deflate pieces compressed in parallel."""
    count = max(1, min(os.cpu_count() or 1, 8, len(raw) // PIECE_BYTES))
    bounds = [len(raw) * index // count for index in range(count + 1)]
    pieces = [(bounds[index], bounds[index + 1], index == count - 1) for index in range(count)]
    if count == 1:
        deflated = [_deflate(raw, *pieces[0])]
    else:
        deflated = list(_threads().map(lambda piece: _deflate(raw, *piece), pieces))
    header = b"\x78\x01"  # deflate, 32 kB window, fastest level; (0x78 * 256 + 0x01) % 31 == 0
    return header + b"".join(deflated) + struct.pack(">I", zlib.adler32(raw))


def _deflate(raw: memoryview, start: int, end: int, last: bool) -> bytes:
    """Raw deflate of raw[start:end], primed with the window before it; byte-aligned unless it is the last."""
    primer = {"zdict": bytes(raw[max(0, start - WINDOW):start])} if start else {}
    compressor = deflate.compressobj(LEVEL, deflate.DEFLATED, -15, 9, deflate.Z_DEFAULT_STRATEGY, **primer)
    return compressor.compress(raw[start:end]) + compressor.flush(deflate.Z_FINISH if last else deflate.Z_SYNC_FLUSH)


@functools.cache
def _threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 8), thread_name_prefix="png")
