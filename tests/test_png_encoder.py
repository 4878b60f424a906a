"""The fast PNG encoder: any decoder reads back the exact pixels and every text chunk, in one or many pieces."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from kolors_app.media import png_encoder
from kolors_app.metadata.png_chunks import png_info, read_parameters


def noisy(mode: str, width: int, height: int, seed: int = 0) -> Image.Image:
    """An image with every byte value and hard edges, so that the Up filter wraps around modulo 256."""
    bands = len(mode) if mode != "L" else 1
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, bands), dtype=np.uint8)
    pixels[: height // 2, : width // 2] = 255
    return Image.fromarray(pixels.squeeze(-1) if bands == 1 else pixels, mode)


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, data) chunks of a PNG, checking each CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        found.append((kind, body))
        offset += 12 + length
    return found


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
@pytest.mark.parametrize("size", [(1, 1), (13, 7), (512, 512), (1024, 40)])
def test_pixels_read_back_exactly(mode, size):
    image = noisy(mode, *size)
    again = Image.open(io.BytesIO(png_encoder.encode_png(image)))
    assert again.mode == mode and again.size == size
    assert np.array_equal(np.asarray(again), np.asarray(image))


@pytest.mark.parametrize("deflate", ["isal", "zlib"])
def test_many_pieces_make_one_valid_zlib_stream(monkeypatch, deflate):
    """With ISA-L's deflate and with zlib's (the fallback where isal has no wheel)."""
    if deflate == "isal":
        assert png_encoder.deflate.__name__ == "isal.isal_zlib"  # a dependency: requirements.txt
    else:
        monkeypatch.setattr(png_encoder, "deflate", zlib)
    monkeypatch.setattr(png_encoder, "PIECE_BYTES", 4096)  # a 300x200 RGB image: 180 kB in 8 pieces
    image = noisy("RGB", 300, 200, seed=3)
    data = png_encoder.encode_png(image)
    idat = b"".join(body for kind, body in chunks_of(data) if kind == b"IDAT")
    raw = zlib.decompress(idat)  # checks the Adler-32 of the whole stream
    rows = np.frombuffer(raw, np.uint8).reshape(200, 1 + 300 * 3)
    assert set(rows[:, 0]) == {png_encoder.UP_FILTER}
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(image))
    monkeypatch.setattr(png_encoder, "PIECE_BYTES", 10**9)
    whole = png_encoder.encode_png(image)
    assert zlib.decompress(b"".join(body for kind, body in chunks_of(whole) if kind == b"IDAT")) == raw


def test_text_chunks_come_before_and_after_the_pixels_as_pillow_puts_them():
    params = {"mode": "text_to_image", "prompt": "一只戴着草帽的橘猫", "negative_prompt": "", "width": 64,
              "height": 64, "num_inference_steps": 8, "guidance_scale": 5.0, "scheduler": "Euler", "seed": 7,
              "num_images": 1}
    info = png_info(params)
    info.add(b"tIME", struct.pack(">HBBBBB", 2026, 12, 2, 4, 5, 6), after_idat=True)
    data = png_encoder.encode_png(noisy("RGB", 64, 64), info)
    kinds = [kind for kind, _ in chunks_of(data)]
    assert kinds[0] == b"IHDR" and kinds[-2:] == [b"tIME", b"IEND"]
    assert kinds.index(b"iTXt") < kinds.index(b"IDAT")
    assert read_parameters(data)["prompt"] == "一只戴着草帽的橘猫"
    assert Image.open(io.BytesIO(data)).info["kolors_studio"].startswith('{"mode": "text_to_image"')


@pytest.mark.parametrize("mode", ["P", "I;16", "1"])
def test_other_modes_go_to_pillow(mode):
    image = noisy("L", 40, 30).convert(mode) if mode != "I;16" else Image.new("I;16", (40, 30), 1000)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a fox")
    again = Image.open(io.BytesIO(png_encoder.encode_png(image, info)))
    assert again.tobytes() == image.tobytes() and again.info["parameters"] == "a fox"


def test_a_generated_photo_is_about_as_small_as_pillows():
    photo = Image.open(Path(__file__).parents[1] / "assets" / "cat.jpg").convert("RGB").resize((512, 512))
    ours = len(png_encoder.encode_png(photo))
    buffer = io.BytesIO()
    photo.save(buffer, "PNG", compress_level=1)
    assert ours < 1.1 * buffer.tell(), (ours, buffer.tell())
