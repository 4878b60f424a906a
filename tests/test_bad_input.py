"""Bad input sent to the running app: each value refused with an error naming the field, and the server goes on.

What strangers send goes to `live_app` (a `python app.py` process), through gradio_client or by hand (`raw`).
"""

import base64
import json
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from gradio_http import NO_CONTROL, NO_CREATIVE, ROOT, SMALL, small
from image_bytes import RED, encoded, png_bomb
from PIL import Image

# image_to_image's values after its own: the ControlNet units off, then no styles (ui/creative.py).
I2I_TAIL = [*NO_CONTROL, *NO_CREATIVE[:1]]

# --- Bad input: each refused with an error naming the field, and the server goes on serving ---

BAD_VALUES = [
    ("width", 255), ("width", 0), ("width", -8), ("width", 100000), ("width", 260), ("width", "256"),
    ("height", 0), ("height", -256), ("height", 100000), ("height", 257),
    ("num_inference_steps", 0), ("num_inference_steps", -1), ("num_inference_steps", 30.5),
    ("num_inference_steps", 10**9), ("num_inference_steps", None),
    ("guidance_scale", -0.5), ("guidance_scale", 30.5), ("guidance_scale", "high"),
    ("seed", -2), ("seed", 2**64), ("seed", "text"), ("seed", 1.5),
    ("num_images", 0), ("num_images", 1000),
    ("prompt", "x" * 200_000), ("prompt", "   "), ("prompt", ["a", "list"]), ("negative_prompt", "x" * 200_000),
    ("scheduler", "Euler; rm -rf /"), ("scheduler", "<b>Euler</b>"), ("scheduler", None),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=[f"{f}={str(v)[:12]}" for f, v in BAD_VALUES])
def test_bad_values_are_refused_naming_the_field(client, field, value):
    with pytest.raises(AppError) as caught:
        client.predict(*small(**{field: value}), api_name="/text_to_image")
    assert str(caught.value).startswith(f"{field}:"), str(caught.value)
    assert len(str(caught.value)) < 400


def test_numbers_that_json_cannot_hold_are_refused(raw):
    for text in ("NaN", "Infinity", "-Infinity", "1e400"):
        data = json.dumps(small()).replace("5.0", text, 1)
        assert raw.error_of("text_to_image", data).startswith("guidance_scale:")


@pytest.mark.parametrize(("field", "value"), [("strength", 0), ("strength", 1.5), ("strength", "all")])
def test_bad_strength_is_refused(client, tmp_path, field, value):
    image = tmp_path / "init.png"
    Image.new("RGB", (64, 64), "blue").save(image)
    with pytest.raises(AppError, match=f"^{field}:"):
        client.predict(*SMALL, handle_file(str(image)), value, api_name="/image_to_image")


def test_bad_ip_adapter_scale_and_missing_reference_are_refused(client, tmp_path):
    image = tmp_path / "reference.png"
    Image.new("RGB", (64, 64), "green").save(image)
    with pytest.raises(AppError, match="^ip_adapter_scale:"):
        client.predict(*SMALL, handle_file(str(image)), 2.5, None, 0.7, api_name="/ip_adapter")
    with pytest.raises(AppError, match="^ip_adapter_image:"):
        client.predict(*SMALL, None, 0.5, None, 0.7, api_name="/ip_adapter")


def exif_rotated() -> bytes:
    image = Image.new("RGB", (64, 32), "blue")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    return encoded(image, "JPEG", exif=exif)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), (80 * i, 0, 0)) for i in range(3)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])



# name -> file bytes that image inputs must refuse, and the words their error must hold
REFUSED_IMAGES = {
    "truncated.jpg": (lambda: encoded(RED, "JPEG")[:300], "damaged"),
    "text.png": (lambda: b"just some text, renamed to .png\n" * 20, "not an image"),
    "drawing.svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "not an image"),
    "page.html": (lambda: b"<html><body><script>alert(1)</script></body></html>", "not an image"),
    "bomb-400mp.png": (lambda: png_bomb(20000, 20000), "pixels"),
    "bomb-100mp.png": (lambda: png_bomb(10000, 10000), "pixels"),
}
# name -> file bytes of unusual but valid images, which must work
ACCEPTED_IMAGES = {
    "cmyk.jpg": lambda: encoded(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG"),
    "16-bit.png": lambda: encoded(Image.new("I;16", (64, 48), 40000), "PNG"),
    "palette.png": lambda: encoded(RED.convert("P"), "PNG"),
    "transparent.png": lambda: encoded(Image.new("RGBA", (64, 48), (0, 0, 0, 0)), "PNG"),
    "exif-rotated.jpg": exif_rotated,
    "animated.gif": animated_gif,
    "png-named.gif": lambda: encoded(RED, "PNG"),
}


@pytest.mark.parametrize("name", REFUSED_IMAGES)
def test_hostile_image_files_are_refused_quickly(client, tmp_path, name):
    make, words = REFUSED_IMAGES[name]
    path = tmp_path / name
    path.write_bytes(make())
    started = time.monotonic()
    with pytest.raises(AppError) as caught:
        client.predict(*SMALL, handle_file(str(path)), 0.7, api_name="/image_to_image")
    assert str(caught.value).startswith("image:") and words in str(caught.value), str(caught.value)
    assert time.monotonic() - started < 10  # refused from the header: nothing was decoded


@pytest.mark.parametrize("name", ACCEPTED_IMAGES)
def test_unusual_valid_images_work(client, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(ACCEPTED_IMAGES[name]())
    gallery, summary = client.predict(*SMALL, handle_file(str(path)), 0.7, api_name="/image_to_image")
    assert summary["images"][0]["mode"] == "image_to_image"
    with Image.open(gallery[0]["image"]) as result:
        assert result.size == (256, 256)


def test_the_reference_image_field_is_named_too(client, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(10000, 10000))
    with pytest.raises(AppError, match="^ip_adapter_image:.*pixels"):
        client.predict(*SMALL, handle_file(str(path)), 0.5, None, 0.7, api_name="/ip_adapter")


def test_data_urls_are_size_checked_before_decoding(raw):
    # gradio_client and the page always upload; a data: URL reaches the app only from a hand-made request,
    # and gradio checks no size for it.
    huge = "data:image/png;base64," + base64.b64encode(b"\0" * (21 * 1024 * 1024)).decode()
    # Larger than any request body may be (--max-request-mb): refused before gradio reads it.
    refused = raw.queued("image_to_image", [*SMALL, {"path": None, "url": huge}, 0.7])
    assert refused["http"] == 413 and "MB" in refused["detail"], refused
    svg = "data:image/svg+xml;base64," + base64.b64encode(b"<svg><script>alert(1)</script></svg>").decode()
    cases = [(svg, "SVG"), ("data:text/html,<script>alert(1)</script>", "data:image/"),
             ("data:image/png;base64,not base64!", "base64")]
    for url, words in cases:
        error = raw.error_of("image_to_image", [*SMALL, {"path": None, "url": url}, 0.7, *I2I_TAIL])
        assert error.startswith("image:") and words in error, error
    small_png = "data:image/png;base64," + base64.b64encode(encoded(RED, "PNG")).decode()
    done = raw.queued("image_to_image", [*SMALL, {"path": None, "url": small_png}, 0.7, *I2I_TAIL])
    assert done["success"], done


def test_uploads_over_the_byte_limit_are_refused(raw, client):
    answer = httpx.post(f"{raw.url}/gradio_api/upload", timeout=60,
                        files={"files": ("big.png", b"\0" * (20 * 1024 * 1024 + 1))})
    assert answer.status_code == 413
    assert client.predict(*small(seed=11), api_name="/text_to_image")[1]["images"][0]["seed"] == 11


def test_paths_and_urls_instead_of_uploads_never_reach_a_file(raw, live_app, client):
    port = httpx.URL(live_app).port
    upload_dir = Path(raw.upload("x.png", encoded(RED, "PNG"))["path"]).parent.parent
    # Without gradio's file marker the value passes gradio untouched: the app refuses it, naming the field.
    for path, words in [("/etc/passwd", "outside"), (str(ROOT / "app.py"), "outside"),
                        (f"{upload_dir}/../../../../etc/hostname", "outside"),
                        (f"http://127.0.0.1:{port}/config", "URL"), ("http://169.254.169.254/latest/", "URL"),
                        ("file:///etc/passwd", "URL")]:
        error = raw.error_of("image_to_image", [*SMALL, {"path": path}, 0.7, *I2I_TAIL])
        assert error.startswith("image:") and words in error, (path, error)
    # With the marker, gradio itself refuses paths it did not receive as uploads, and URLs of private,
    # loopback and link-local hosts (its SSRF guard), before the app sees them: an error without details.
    marker = {"_type": "gradio.FileData"}
    for path in ["/etc/passwd", str(ROOT / "app.py"), f"http://127.0.0.1:{port}/config",
                 f"http://localhost:{port}/config", "http://[::1]/x.png", "http://10.0.0.1/x.png",
                 "http://169.254.169.254/latest/meta-data/"]:
        message = raw.queued("image_to_image", [*SMALL, {"path": path, "meta": marker}, 0.7, *I2I_TAIL])
        assert message["success"] is False, (path, message)
        assert message["output"].get("error") is None, (path, message)
    assert client.predict(*small(seed=12), api_name="/text_to_image")[1]["images"][0]["seed"] == 12
