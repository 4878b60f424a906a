"""The app's own REST API (`--api`): POST /kolors/v1/generate answers the PNG itself, or JSON, on the tiny model."""

import base64
import dataclasses
import io
import json
import time

import httpx
import numpy as np
import pytest
from gradio_http import free_port
from PIL import Image

from kolors_app.core.logins import Login
from kolors_app.engine.generation import generate
from kolors_app.metadata.png_chunks import JSON_KEY
from kolors_app.core.request import GenerationRequest

SMALL = {"width": 256, "height": 256, "num_inference_steps": 2}
PNG = {"Accept": "image/png"}


@pytest.fixture(scope="module")
def rest(settings, manager, tmp_path_factory):
    """The app with --api served in this process on the shared tiny manager, saving on: (URL, context, outputs)."""
    from kolors_app.launch import launch

    folder = tmp_path_factory.mktemp("rest")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        app_settings = dataclasses.replace(settings, port=free_port(), outputs_dir=folder / "outputs",
                                           save_outputs=True, api=True)
        app, ctx = launch(app_settings, manager, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{app_settings.port}/kolors/v1/generate", ctx, folder / "outputs"
        finally:
            app.close()


def post(rest, body, headers=None) -> httpx.Response:
    return httpx.post(rest[0], json=body, headers=headers or {}, timeout=120)


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_one_image_comes_back_as_the_png_itself_with_its_parameters(rest, manager):
    answer = post(rest, {"prompt": "一只猫 a cat", "seed": 7, **SMALL}, PNG)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.headers["x-kolors-seeds"] == "7" and json.loads(answer.headers["x-kolors-warnings"]) == []
    image = opened(answer.content)
    stored = json.loads(image.info[JSON_KEY])
    assert stored["mode"] == "text_to_image" and stored["seed"] == 7 and stored["prompt"] == "一只猫 a cat"
    assert stored["guidance_scale"] == 5.0  # a default: the caller named only what it needed
    assert "Seed: 7" in image.info["parameters"]
    core = generate(manager, GenerationRequest("一只猫 a cat", width=256, height=256, num_inference_steps=2, seed=7))
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(core.images[0].image))  # the model's pixels


def test_json_answers_every_image_and_the_outputs_copy_is_the_same_file(rest):
    answer = post(rest, {"prompt": "two foxes", "seed": 11, "num_images": 2, **SMALL})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    found = answer.json()
    assert [item["seed"] for item in found["parameters"]] == [11, 12] and found["stopped"] is False
    pngs = [base64.b64decode(data) for data in found["images"]]
    assert [opened(data).size for data in pngs] == [(256, 256)] * 2
    assert rest[1].saver.wait(30)
    saved = {path.read_bytes() for path in rest[2].rglob("*.png")}
    assert set(pngs) <= saved  # written after the answer, byte for byte what the caller got


def test_the_images_given_decide_the_mode(rest, init_image):
    plain = opened(post(rest, {"prompt": "a ball", "seed": 3, **SMALL}, PNG).content)
    again = opened(post(rest, {"prompt": "a ball", "seed": 3, "image": b64(init_image), **SMALL}, PNG).content)
    stored = json.loads(again.info[JSON_KEY])
    assert stored["mode"] == "image_to_image" and stored["strength"] == 0.7
    assert not np.array_equal(np.asarray(plain), np.asarray(again))
    reference = opened(post(rest, {"prompt": "", "seed": 3, "ip_adapter_image": b64(init_image), **SMALL}, PNG).content)
    assert json.loads(reference.info[JSON_KEY])["mode"] == "ip_adapter"


def test_inpainting_keeps_every_pixel_outside_the_mask(rest, init_image):
    mask = Image.new("L", init_image.size, 0)
    mask.paste(255, (64, 64, 192, 192))
    answer = post(rest, {"prompt": "a red ball", "seed": 5, "image": b64(init_image), "mask": b64(mask), **SMALL}, PNG)
    assert answer.status_code == 200, answer.text
    image = opened(answer.content).convert("RGB")
    pixels, before = np.asarray(image).astype(int), np.asarray(init_image).astype(int)
    assert np.array_equal(pixels[:32, :32], before[:32, :32])
    assert np.abs(pixels[96:160, 96:160] - before[96:160, 96:160]).mean() > 10
    assert json.loads(image.info[JSON_KEY])["mode"] == "inpaint"


def test_a_controlnet_unit_steers_the_run_and_the_parameters_posted_back_repeat_the_image(rest):
    edges = Image.new("RGB", (256, 256), "black")
    edges.paste((255, 255, 255), (64, 64, 192, 192))
    body = {"prompt": "a house", "seed": 4, "control_type": "canny", "control_scale": 0.7,
            "control_image": b64(edges), **SMALL}
    steered = opened(post(rest, body, PNG).content)
    plain = opened(post(rest, {"prompt": "a house", "seed": 4, **SMALL}, PNG).content)
    assert not np.array_equal(np.asarray(steered), np.asarray(plain))
    stored = json.loads(steered.info[JSON_KEY])
    assert stored["control_type"] == "canny" and stored["control_scale"] == 0.7
    again = post(rest, {**stored, "control_image": b64(edges)}, PNG)  # an image's own JSON
    assert again.status_code == 200, again.text
    again = opened(again.content)
    assert np.array_equal(np.asarray(again), np.asarray(steered))


@pytest.mark.parametrize("body, field", [
    ({"prompt": "x", "stpes": 3}, "stpes"),
    ({"prompt": "x", "width": 257}, "width"),
    ({"prompt": "x", "num_inference_steps": 10**6}, "num_inference_steps"),
    ({"prompt": "x" * 6000}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x", "seed": "abc"}, "seed"),
    ({"prompt": "x", "mode": "video"}, "mode"),
    ({"prompt": "x", "scheduler": "LMS"}, "scheduler"),
    ({"prompt": "x", "image": "not base64!"}, "image"),
    ({"prompt": "x", "image": "https://example.com/cat.png"}, "image"),
    ({"prompt": "x", "image": "/etc/passwd"}, "image"),
    ({"prompt": "x", "image": base64.b64encode(b"<svg></svg>").decode()}, "image"),
    ({"prompt": "x", "mode": "image_to_image"}, "image"),
    ({"prompt": "x", "control_image": "aaaa"}, "control_image"),
    ({"prompt": "x", "control_type": "canny"}, "control_image"),
    ({"prompt": "x", "loras": 5}, "loras"),
    ({"prompt": "x", "styles": 5}, "styles"),
    ({"prompt": "x", "hires_upscale": "big"}, "hires_upscale"),
    ([1, 2], "body"),
])
def test_bad_values_are_refused_naming_the_field(rest, body, field):
    answer = post(rest, body if isinstance(body, list) else {**SMALL, **body})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and answer.json()["detail"].startswith(field)


def test_broken_and_huge_bodies_are_refused_and_the_server_keeps_serving(rest):
    assert httpx.post(rest[0], content=b"{not json", timeout=30).status_code == 422
    huge = b'{"prompt": "' + b"x" * (rest[1].settings.limits.max_upload_bytes * 9) + b'"}'
    assert httpx.post(rest[0], content=huge, timeout=60).status_code == 413
    started = time.monotonic()
    assert post(rest, {"prompt": "still here", **SMALL}, PNG).status_code == 200
    assert time.monotonic() - started < 60


def test_credentials_and_a_full_queue(settings, manager):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from kolors_app.api.rest import PATH, native_router
    from kolors_app.ui.runner import AppContext

    ctx = AppContext(dataclasses.replace(settings, api_auth=(Login("robot", "s3cret"),), queue_size=0), manager)
    app = FastAPI()
    app.include_router(native_router(ctx))
    client = TestClient(app)
    body = {"prompt": "x", **SMALL}
    assert client.post(PATH, json=body).status_code == 401
    assert client.post(PATH, json=body, auth=("robot", "wrong")).status_code == 401
    full = client.post(PATH, json=body, auth=("robot", "s3cret"))
    assert full.status_code == 503 and "Queue is full" in full.json()["error"]


def test_no_rest_route_without_the_flag(served):
    assert httpx.post(f"{served.url}kolors/v1/generate", json={"prompt": "x"}, timeout=30).status_code == 404
