"""Every upload becomes a safe RGB image, or one clear error naming the field; all cases built on the fly."""

import base64
import io
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from kolors_app.media import images
from kolors_app.core.config import Limits
from kolors_app.media.images import decode_data_url, load_image, to_rgb
from kolors_app.core.errors import ValidationError

LIMITS = Limits()
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(image, format="PNG", **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width, height):
    """A 60-byte PNG whose header claims width x height; its pixel data is garbage, so decoding would fail."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"not zlib")
            + png_chunk(b"IEND", b""))


def refused(source, field="image", **options):
    """The ValidationError load_image raises; fails the test when it does not raise."""
    with pytest.raises(ValidationError) as error:
        load_image(source, options.pop("limits", LIMITS), field=field, **options)
    assert error.value.field == field
    assert str(error.value).startswith(field + ": ")
    return str(error.value)


def close(pixel, expected, tolerance=6):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected))


def test_rgb_png_bytes_keep_their_pixels():
    image = Image.new("RGB", (5, 3), (12, 34, 56))
    image.putpixel((4, 2), (250, 1, 2))
    loaded = load_image(encode(image))
    assert loaded.mode == "RGB" and loaded.size == (5, 3)
    assert loaded.tobytes() == image.tobytes()


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (2, 1))
    image.putpixel((0, 0), (255, 0, 0, 128))
    image.putpixel((1, 0), (0, 0, 0, 0))  # fully transparent black must become white, not black
    loaded = load_image(encode(image))
    assert close(loaded.getpixel((0, 0)), (255, 127, 127), 1)
    assert loaded.getpixel((1, 0)) == WHITE


def test_la_and_premultiplied_modes_on_white():
    gray = Image.new("LA", (1, 1), (0, 0))
    assert load_image(encode(gray)).getpixel((0, 0)) == WHITE
    half = Image.new("LA", (1, 1), (0, 128))
    assert close(load_image(half).getpixel((0, 0)), (127, 127, 127), 1)
    assert load_image(Image.new("RGBa", (1, 1), (0, 0, 0, 0))).getpixel((0, 0)) == WHITE


def test_palette_with_transparent_index():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    loaded = load_image(encode(image, transparency=0))
    assert loaded.getpixel((0, 0)) == WHITE
    assert loaded.getpixel((1, 0)) == GREEN


def test_palette_alpha_mode():
    image = Image.new("PA", (1, 1))
    image.putpalette([0, 0, 255] + [0] * 765)
    image.putpixel((0, 0), (0, 0))
    assert load_image(image).getpixel((0, 0)) == WHITE


def test_cmyk():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    assert load_image(encode(cmyk, "TIFF")).getpixel((4, 4)) == RED
    assert close(load_image(encode(cmyk, "JPEG", quality=95)).getpixel((4, 4)), RED, 8)


@pytest.mark.parametrize("value, expected", [(0, 0), (32768, 128), (65535, 255), (257 * 40, 40)])
def test_16_bit_gray_is_scaled_not_clipped(value, expected):
    image = Image.fromarray(np.full((4, 4), value, np.uint16))
    assert image.mode == "I;16"
    for source in (encode(image), encode(image, "TIFF"), image):
        assert load_image(source).getpixel((0, 0)) == (expected,) * 3


def test_32_bit_and_float_modes_are_scaled():
    assert load_image(Image.fromarray(np.full((2, 2), 65535, np.int32))).getpixel((0, 0)) == WHITE
    assert load_image(Image.fromarray(np.full((2, 2), 32768, np.int32))).getpixel((0, 0)) == (128, 128, 128)
    assert load_image(Image.fromarray(np.full((2, 2), 0.5, np.float32))).getpixel((0, 0)) == (128, 128, 128)
    assert load_image(Image.fromarray(np.full((2, 2), 200.0, np.float32))).getpixel((0, 0)) == (200, 200, 200)


@pytest.mark.parametrize("mode, value, expected", [("1", 1, WHITE), ("1", 0, (0, 0, 0)), ("L", 77, (77, 77, 77)),
                                                   ("YCbCr", (76, 85, 255), RED)])
def test_other_modes(mode, value, expected):
    assert close(load_image(Image.new(mode, (2, 2), value)).getpixel((0, 0)), expected, 2)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), RED)
    image.paste(BLUE, (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: show it turned 90 degrees clockwise
    loaded = load_image(encode(image, "JPEG", exif=exif, quality=95))
    assert loaded.size == (20, 40)
    assert close(loaded.getpixel((10, 5)), RED, 12)  # the left half is now on top
    assert close(loaded.getpixel((10, 35)), BLUE, 12)
    assert loaded.getexif().get(0x0112) is None


@pytest.mark.parametrize("format", ["GIF", "PNG", "WEBP"])
def test_animation_gives_its_first_frame(format):
    frames = [Image.new("RGB", (8, 8), color) for color in (RED, GREEN, BLUE)]
    data = encode(frames[0], format, save_all=True, append_images=frames[1:], duration=50, loop=0,
                  **({"lossless": True} if format == "WEBP" else {}))
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.n_frames == 3
    assert load_image(data).getpixel((4, 4)) == RED
    with Image.open(io.BytesIO(data)) as opened:
        opened.seek(2)  # a PIL image left on a later frame still gives the first
        assert load_image(opened).getpixel((4, 4)) == RED


def test_png_bytes_named_gif_are_read_by_content(tmp_path):
    path = tmp_path / "really_a_png.gif"
    path.write_bytes(encode(Image.new("RGB", (3, 3), GREEN)))
    assert load_image(path, allowed_roots=[tmp_path]).getpixel((1, 1)) == GREEN


def test_truncated_jpeg_is_refused():
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG")
    message = refused(data[: len(data) // 2], field="init_image")
    assert "damaged" in message or "truncated" in message


def test_truncated_png_is_refused():
    data = encode(Image.effect_noise((256, 256), 64))
    refused(data[: len(data) // 2])


@pytest.mark.parametrize("data", [
    b"just some text that was renamed to .png\n",
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)'
    b"</script></svg>",
    b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # Pillow knows EPS, but it runs Ghostscript
    b"",
])
def test_non_images_are_refused(data, tmp_path):
    assert "not an image file" in refused(data)
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    assert "not an image file" in refused(path, allowed_roots=[tmp_path])


def test_bomb_header_refused_before_decoding():
    data = png_header_only(20000, 20000)  # 400 megapixels claimed in 60 bytes
    assert len(data) < 100
    assert "pixels" in refused(data)
    # Beyond our limit, below Pillow's: the pixel data is garbage, so a "damaged" error would mean it was decoded.
    assert "25,000,000 pixels" in refused(png_header_only(5000, 5000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert "100,000,000 pixels" in refused(png_header_only(10000, 10000))


def test_pixel_limit_is_configurable_and_covers_pil_images():
    small = Limits(max_image_pixels=1000)
    assert "1,600 pixels" in refused(encode(Image.new("RGB", (40, 40))), limits=small)
    refused(Image.new("RGB", (40, 40)), limits=small)
    assert load_image(Image.new("RGB", (25, 40)), small).size == (25, 40)


def test_byte_limit_checked_before_decoding(monkeypatch):
    data = encode(Image.effect_noise((64, 64), 64))
    monkeypatch.setattr(images.Image, "open", lambda *args, **kwargs: pytest.fail("decoded an oversized upload"))
    assert "MB" in refused(data, limits=Limits(max_upload_bytes=len(data) - 1))


def test_huge_data_url_refused_before_decoding(monkeypatch):
    url = "data:image/png;base64," + "A" * (28 * 1024 * 1024)  # about 21 MB once decoded
    monkeypatch.setattr(images.base64, "b64decode", lambda *args, **kwargs: pytest.fail("decoded the payload"))
    assert "at most 20.0 MB" in refused(url)
    url = "data:image/png," + "%00" * (21 * 1024 * 1024)
    assert "at most 20.0 MB" in refused(url)


def test_data_urls():
    data = encode(Image.new("RGB", (4, 4), BLUE))
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert load_image(url).getpixel((0, 0)) == BLUE
    assert load_image(url.replace("data:image/png", "DATA:IMAGE/PNG")).getpixel((0, 0)) == BLUE
    assert decode_data_url("data:image/png," + "".join(f"%{byte:02x}" for byte in data), 10**6) == data
    assert "base64" in refused("data:image/png;base64,@@@not base64@@@")
    assert "comma" in refused("data:image/png;base64")
    assert "data:text/html" in refused("data:text/html;base64," + base64.b64encode(b"<h1>x</h1>").decode())
    svg = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode()
    assert "SVG" in refused("data:image/svg+xml;base64," + svg)
    assert "not an image file" in refused("data:image/png;base64," + base64.b64encode(b"hello").decode())


@pytest.mark.parametrize("url", ["http://example.com/cat.png", "https://169.254.169.254/latest/meta-data",
                                 "file:///etc/passwd", "FTP://host/x.png", "file:/etc/hosts", "javascript:alert(1)"])
def test_urls_are_never_fetched(url, tmp_path):
    assert "URL" in refused(url, allowed_roots=[tmp_path, "/"])


@pytest.fixture
def roots(tmp_path):
    inside, outside = tmp_path / "uploads", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    (inside / "ok.png").write_bytes(encode(Image.new("RGB", (2, 2), RED)))
    (outside / "secret.png").write_bytes(encode(Image.new("RGB", (2, 2), BLUE)))
    return inside, outside


def test_paths_inside_allowed_roots(roots):
    inside, _ = roots
    assert load_image(inside / "ok.png", allowed_roots=[inside]).getpixel((0, 0)) == RED
    assert load_image(str(inside / "sub" / ".." / "ok.png"), allowed_roots=[str(inside)]).getpixel((0, 0)) == RED
    os.symlink(inside / "ok.png", inside / "link.png")
    assert load_image(inside / "link.png", allowed_roots=[inside]).getpixel((0, 0)) == RED


def test_paths_are_refused_without_roots(roots):
    inside, _ = roots
    assert "not allowed" in refused(inside / "ok.png")
    assert "not allowed" in refused(str(inside / "ok.png"))


def test_paths_escaping_the_roots(roots):
    inside, outside = roots
    assert "outside" in refused(outside / "secret.png", allowed_roots=[inside])
    assert "outside" in refused(str(inside / ".." / "private" / "secret.png"), allowed_roots=[inside])
    os.symlink(outside / "secret.png", inside / "escape.png")
    assert "outside" in refused(inside / "escape.png", allowed_roots=[inside])
    os.symlink(outside, inside / "folder_link")
    assert "outside" in refused(inside / "folder_link" / "secret.png", allowed_roots=[inside])
    # A root that is a prefix of another folder's name does not let that folder in.
    sibling = inside.parent / (inside.name + "_evil")
    sibling.mkdir()
    (sibling / "x.png").write_bytes(encode(Image.new("RGB", (2, 2))))
    assert "outside" in refused(sibling / "x.png", allowed_roots=[inside])


def test_missing_folders_and_big_files(roots):
    inside, _ = roots
    assert "no such file" in refused(inside / "missing.png", allowed_roots=[inside])
    assert "no such file" in refused(inside, allowed_roots=[inside])
    refused(str(inside / "bad\0name.png"), allowed_roots=[inside])
    assert "MB" in refused(inside / "ok.png", allowed_roots=[inside], limits=Limits(max_upload_bytes=10))


def test_result_outlives_the_file(roots):
    inside, _ = roots
    loaded = load_image(inside / "ok.png", allowed_roots=[inside])
    (inside / "ok.png").unlink()
    assert loaded.resize((4, 4)).getpixel((3, 3)) == RED


@pytest.mark.parametrize("source", [None, 42, ["a"], {"path": "x"}])
def test_wrong_types(source):
    refused(source, field="ip_adapter_image")


def test_to_rgb_returns_a_copy():
    image = Image.new("RGB", (2, 2), RED)
    converted = to_rgb(image)
    converted.putpixel((0, 0), BLUE)
    assert image.getpixel((0, 0)) == RED
