"""The call sequences of Open WebUI and SillyTavern, replayed from their published source with their default settings
against the app started with `--api` (no credentials configured, saving off as on a Space), asserting what those
clients read from each answer.

Read from:
- Open WebUI `backend/open_webui/routers/images.py` at commit 02530d501461ce58ab06231d7c2ef2024a141ddf, with the
  defaults of `backend/open_webui/config.py` (AUTOMATIC1111_API_AUTH "" -> `Authorization: Basic ` + base64(""),
  IMAGE_SIZE 512x512, IMAGE_STEPS 50, AUTOMATIC1111_PARAMS {}, IMAGE_GENERATION_MODEL "" -> `dall-e-2` for the
  OpenAI engine, IMAGES_OPENAI_API_KEY "" -> `Bearer `, IMAGE_EDIT_MODEL "", IMAGE_EDIT_SIZE "").
- SillyTavern `src/endpoints/stable-diffusion.js` at commit 02903fdd3ad33dc642fb328e43d0a8b3724e1a38 (the calls it
  makes to the server), with the request body and fresh-install defaults of its front end
  `public/scripts/extensions/stable-diffusion/index.js` at commit ba6f7b7a98cf7a5eaf4f0e81da9779a9a668ced4
  (`generateAutoImage`, `defaultSettings`: sampler DDIM, scheduler `normal`, 20 steps, CFG 7, 512x512,
  auto_auth "" -> `Authorization: Basic ` + base64("")).

Both clients send the Basic header without a password. HTTP trims the trailing space of a header value
(node-fetch already does), so the server sees `Basic`; httpx refuses to send the space, so it is sent trimmed here.
"""

import base64
import dataclasses
import io
import json

import httpx
import numpy as np
import pytest
from gradio_http import free_port
from PIL import Image

from kolors_app.metadata.png_chunks import JSON_KEY

EMPTY_BASIC = {"authorization": "Basic"}  # "Basic " + base64(""), trimmed
EMPTY_BEARER = {"Authorization": "Bearer"}  # "Bearer " + "" (no key configured), trimmed


@pytest.fixture(scope="module")
def base(settings, manager, tmp_path_factory):
    """The app as a user starts it for these clients: `--api`, no credentials; saving off (as on a Space)."""
    from kolors_app.launch import launch

    folder = tmp_path_factory.mktemp("replays")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        own = dataclasses.replace(settings, port=free_port(), api=True, save_outputs=False)
        app, _ctx = launch(own, manager, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{own.port}"
        finally:
            app.close()


def png_of(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


# --- Open WebUI, "Automatic1111" engine ---


def open_webui_generate(base: str, params: dict) -> dict:
    """image_generations() for the automatic1111 engine: the model from /options, then txt2img."""
    options = httpx.get(f"{base}/sdapi/v1/options", headers=EMPTY_BASIC, timeout=30).json()
    assert options["sd_model_checkpoint"] == "Kolors"  # get_image_model() reads this key
    data = {"prompt": "a lighthouse at dusk", "batch_size": 1, "width": 512, "height": 512, "steps": 50, **params}
    answer = httpx.post(f"{base}/sdapi/v1/txt2img", json=data, headers=EMPTY_BASIC, timeout=300)
    return answer.json()  # no raise_for_status: Open WebUI reads res["images"] and res["info"] at once


def test_open_webui_automatic1111_engine_with_its_defaults(base):
    # update_config() -> set_image_model(""): GET /options, then POST them back with sd_model_checkpoint "".
    options = httpx.get(f"{base}/sdapi/v1/options", headers=EMPTY_BASIC, timeout=30)
    assert options.status_code == 200
    saved = httpx.post(f"{base}/sdapi/v1/options", json={**options.json(), "sd_model_checkpoint": ""},
                       headers=EMPTY_BASIC, timeout=30)
    assert saved.status_code == 200  # r.raise_for_status()
    # verify_url(): raise_for_status() on GET /options.
    assert httpx.get(f"{base}/sdapi/v1/options", headers=EMPTY_BASIC, timeout=30).status_code == 200
    # get_models(): [{"id": title, "name": model_name}].
    models = httpx.get(f"{base}/sdapi/v1/sd-models", headers=EMPTY_BASIC, timeout=30).json()
    assert [{"id": model["title"], "name": model["model_name"]} for model in models] == [
        {"id": "Kolors", "name": "Kolors"}]
    res = open_webui_generate(base, {})
    images = [png_of(image) for image in res["images"]]  # get_image_data(): base64 without a comma, image/png
    assert [image.size for image in images] == [(512, 512)] and images[0].format == "PNG"
    assert json.loads(res["info"])["all_seeds"]  # stored with the image as metadata


def test_open_webui_admin_parameters_sampler_and_schedule(base):
    res = open_webui_generate(base, {"sampler_name": "Euler a", "scheduler": "Karras"})  # AUTOMATIC1111_PARAMS
    image = png_of(res["images"][0])
    assert json.loads(image.info[JSON_KEY])["scheduler"] == "Euler a"
    assert any("Karras" in note for note in json.loads(res["info"])["warnings"])


# --- Open WebUI, "OpenAI" engine (images and edits) ---


def test_open_webui_openai_engine_with_its_defaults(base):
    data = {"model": "dall-e-2", "prompt": "a lighthouse at dusk", "n": 1, "size": "512x512",
            "response_format": "b64_json"}
    answer = httpx.post(f"{base}/v1/images/generations", json=data,
                        headers={**EMPTY_BEARER, "Content-Type": "application/json"}, timeout=300)
    answer.raise_for_status()
    res = answer.json()
    for image in res["data"]:
        assert image.get("url") is None  # else get_image_data(url)
        assert png_of(image["b64_json"]).size == (512, 512)


def test_open_webui_openai_image_edit_with_its_defaults(base):
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    photo = Image.fromarray(np.stack([np.tile(ramp, (256, 1))] * 3, axis=-1))
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    # image_edits(): no mask, no size (IMAGE_EDIT_SIZE ""), model "" (IMAGE_EDIT_MODEL), the image as a file
    # named <uuid>.png from its data URL.
    form = {"model": "", "prompt": "make it a watercolour", "response_format": "b64_json"}
    files = {"image": ("0b7e6f0e-2f1c-4c4e-9e55-1d1f5b1e2a3c.png", buffer.getvalue(), "image/png")}
    answer = httpx.post(f"{base}/v1/images/edits", data=form, files=files, headers=EMPTY_BEARER, timeout=300)
    answer.raise_for_status()
    edited = png_of(answer.json()["data"][0]["b64_json"])
    assert edited.size == (256, 256)
    assert json.loads(edited.info[JSON_KEY])["mode"] == "image_to_image"  # opaque and no mask: the whole image
    assert "whole image" in answer.headers["x-kolors-warnings"]


# --- SillyTavern, "SD Web UI (AUTOMATIC1111)" source ---


def sillytavern_get(base: str, path: str):
    """What each of SillyTavern's server endpoints does: GET with the Basic header, refuse when not ok."""
    answer = httpx.get(f"{base}{path}", headers=EMPTY_BASIC, timeout=30)
    assert answer.is_success, f"{path}: {answer.status_code} (SillyTavern: 'SD WebUI returned an error.')"
    return answer.json()


def test_sillytavern_connect_and_settings_lists(base):
    sillytavern_get(base, "/sdapi/v1/options")  # /ping
    samplers = [sampler["name"] for sampler in sillytavern_get(base, "/sdapi/v1/samplers")]  # /samplers
    assert "DDIM" in samplers  # the default sampler is offered
    assert sillytavern_get(base, "/sdapi/v1/options")["sd_model_checkpoint"] == "Kolors"  # /get-model
    models = sillytavern_get(base, "/sdapi/v1/sd-models")  # /models
    assert [{"value": model["title"], "text": model["title"]} for model in models] == [
        {"value": "Kolors", "text": "Kolors"}]
    upscalers = [upscaler["name"] for upscaler in sillytavern_get(base, "/sdapi/v1/upscalers")]  # /upscalers
    latent = [mode["name"] for mode in sillytavern_get(base, "/sdapi/v1/latent-upscale-modes")]
    upscalers[1:1] = latent  # "0 = None, then Latent Upscalers, then Upscalers"
    assert upscalers[:3] == ["None", "Latent", "Lanczos"]
    schedulers = [item["name"] for item in sillytavern_get(base, "/sdapi/v1/schedulers")]  # /schedulers
    assert schedulers == ["automatic", "karras"]
    vaes = [sillytavern_get(base, path) for path in ("/sdapi/v1/sd-vae", "/sdapi/v1/sd-modules")]  # /vaes
    assert all(isinstance(found, list) for found in vaes) and [x["model_name"] for x in vaes[0]] == []


def test_sillytavern_generate_with_its_defaults(base):
    options = sillytavern_get(base, "/sdapi/v1/options")
    assert "forge_preset" not in options  # not Forge: override_settings.forge_additional_modules is dropped
    body = {  # the front end's generateAutoImage() body, posted on as it is by /generate
        "url": "http://localhost:7860", "auth": "",
        "prompt": "best quality, absurdres, aesthetic, a lighthouse at dusk",
        "negative_prompt": "lowres, bad anatomy, bad hands, text, error, cropped, worst quality, low quality, "
                           "normal quality, jpeg artifacts, signature, watermark, username, blurry",
        "sampler_name": "DDIM", "scheduler": "normal", "steps": 20, "cfg_scale": 7, "width": 512, "height": 512,
        "restore_faces": False, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2.0,
        "denoising_strength": 0.7, "hr_second_pass_steps": 0,
        "override_settings": {"CLIP_stop_at_last_layers": 1}, "override_settings_restore_afterwards": True,
        "clip_skip": 1, "save_images": True, "send_images": True, "do_not_save_grid": False,
        "do_not_save_samples": False,
    }
    answer = httpx.post(f"{base}/sdapi/v1/txt2img", json=body,
                        headers={"Content-Type": "application/json", **EMPTY_BASIC}, timeout=300)
    assert answer.is_success, answer.text  # else: 'SD WebUI returned an error.'
    data = answer.json()
    image = png_of(data["images"][0])  # { format: 'png', data: data.images[0] }
    assert image.size == (512, 512)
    stored = json.loads(image.info[JSON_KEY])
    assert stored["scheduler"] == "DDIM" and stored["num_inference_steps"] == 20 and stored["guidance_scale"] == 7
    notes = json.loads(data["info"])["warnings"]
    assert any("'normal'" in note for note in notes) and any(note.startswith("save_images") for note in notes)


def test_sillytavern_set_model_then_wait_for_the_server(base):
    # /set-model: POST the checkpoint, then poll /progress until progress 0 and job_count 0 (10 tries).
    answer = httpx.post(f"{base}/sdapi/v1/options", json={"sd_model_checkpoint": "Kolors"},
                        headers={"Content-Type": "application/json", **EMPTY_BASIC}, timeout=30)
    assert answer.is_success
    state = sillytavern_get(base, "/sdapi/v1/progress")
    assert state["progress"] == 0.0 and state["state"]["job_count"] == 0
