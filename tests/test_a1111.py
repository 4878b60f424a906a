"""AUTOMATIC1111's REST API (`--api`) on the tiny model, through the `webuiapi` client library and raw HTTP."""

import base64
import dataclasses
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
import webuiapi
from gradio_http import free_port, wait_until
from PIL import Image

from kolors_app.core.logins import Login
from kolors_app.metadata.png_chunks import JSON_KEY, read_image_parameters

SMALL = dict(width=256, height=256, steps=2)


@pytest.fixture(scope="module")
def a1111(settings, tmp_path_factory):
    """The app with --api served in this process, with a LoRA and an upscaler folder: (base URL, app context).

    Its own pipeline manager: the LoRAs it switches never touch the session's shared pipeline.
    """
    from kolors_app.testing import tiny_creative
    from kolors_app.models.pipeline_manager import PipelineManager
    from kolors_app.launch import launch

    folder = tmp_path_factory.mktemp("a1111")
    tiny_creative.build_esrgan(folder / "upscalers" / "tiny-esrgan-4x.safetensors")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        app_settings = dataclasses.replace(settings, port=free_port(), outputs_dir=folder / "outputs",
                                           save_outputs=True, api=True, lora_dir=folder / "loras",
                                           upscaler_dir=folder / "upscalers")
        manager = PipelineManager(app_settings)
        tiny_creative.build_diffusers_lora(manager.load(), folder / "loras" / "tiny-style")
        app, ctx = launch(app_settings, manager, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{app_settings.port}", ctx
        finally:
            app.close()


@pytest.fixture(scope="module")
def api(a1111):
    return webuiapi.WebUIApi(baseurl=f"{a1111[0]}/sdapi/v1", sampler="Euler", steps=2)


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def written_parameters(image: Image.Image) -> dict:
    """Everything the app wrote into the PNG (its JSON chunk, unfiltered)."""
    return json.loads(image.info[JSON_KEY])


def post(a1111, path: str, body) -> httpx.Response:
    return httpx.post(f"{a1111[0]}{path}", json=body, timeout=120)


# --- with the webuiapi client library ---


def test_txt2img_answers_pngs_with_parameters_and_a1111_info(api):
    result = api.txt2img(prompt="一只红色的狐狸, a red fox", negative_prompt="blurry", seed=42, batch_size=2,
                         cfg_scale=6.5, sampler_name="DPM++ 2M", scheduler="Karras", **SMALL)
    assert len(result.images) == 2 and result.images[0].size == (256, 256)
    assert result.info["all_seeds"] == [42, 43] and result.info["seed"] == 42
    assert result.info["infotexts"][0].startswith("一只红色的狐狸, a red fox\nNegative prompt: blurry\nSteps: 2, "
                                                  "Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 42")
    stored = read_image_parameters(result.images[1])
    assert stored.parameters["seed"] == 43 and stored.parameters["scheduler"] == "DPM++ 2M Karras"
    assert stored.text == result.info["infotexts"][1]
    assert result.parameters["prompt"] == "一只红色的狐狸, a red fox"


def test_same_seed_same_pixels_and_n_iter_continues_the_seeds(api):
    first = api.txt2img(prompt="a cat", seed=7, **SMALL)
    again = api.txt2img(prompt="a cat", seed=6, n_iter=2, **SMALL)
    assert again.info["all_seeds"] == [6, 7] and len(again.images) == 2
    assert np.array_equal(np.asarray(first.image.convert("RGB")), np.asarray(again.images[1].convert("RGB")))


def test_img2img_repaints_the_init_image(api, init_image):
    result = api.img2img(images=[init_image], prompt="an oil painting", denoising_strength=0.5, seed=3, **SMALL)
    assert result.image.size == (256, 256)
    stored = read_image_parameters(result.image).parameters
    assert stored["mode"] == "image_to_image" and stored["strength"] == 0.5


def test_png_info_reads_the_parameters_back(api):
    image = api.txt2img(prompt="a lighthouse", seed=5, **SMALL).image
    info = api.png_info(image)
    assert info.info.startswith("a lighthouse\nSteps: 2, Sampler: Euler")
    assert info.parameters["Prompt"] == "a lighthouse" and info.parameters["Seed"] == "5"


def test_interrupt_ends_the_running_job_and_progress_shows_it(api, a1111):
    answers = {}
    worker = threading.Thread(target=lambda: answers.update(
        result=api.txt2img(prompt="a long run", seed=1, width=256, height=256, steps=150, n_iter=2)))
    worker.start()
    assert wait_until(lambda: api.get_progress()["state"]["sampling_step"] >= 2, timeout=60)
    state = api.get_progress()
    assert 0 < state["progress"] < 1 and state["state"]["job_count"] == 2 and state["eta_relative"] > 0
    assert wait_until(lambda: api.get_progress()["current_image"], timeout=30), "no live preview"
    preview = Image.open(io.BytesIO(base64.b64decode(api.get_progress()["current_image"])))
    assert preview.size[0] > 0
    started = time.monotonic()
    assert api.interrupt() == {}
    worker.join(60)
    assert time.monotonic() - started < 30
    # As A1111: the unfinished image comes back (a preview of its latents), not `images: []` (webuiapi's IndexError).
    result = answers["result"]
    assert result.info["interrupted"] is True and len(result.images) == 1 and result.image.size == (256, 256)
    assert written_parameters(result.image)["interrupted"] is True and result.info["all_seeds"] == [1, 2]
    assert any("interrupted" in note for note in result.info["warnings"])
    assert api.get_progress()["state"]["job_count"] == 0


def test_lists_models_samplers_schedulers_options(api, a1111):
    assert [model["title"] for model in api.get_sd_models()] == ["Kolors"]
    assert api.get_options()["sd_model_checkpoint"] == "Kolors"
    assert {"Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras"} <= {s["name"] for s in api.get_samplers()}
    assert {s["name"] for s in httpx.get(f"{a1111[0]}/sdapi/v1/schedulers").json()} == {"automatic", "karras"}
    assert api.util_get_current_model() == "Kolors"
    api.set_options({"sd_model_checkpoint": "Kolors", "jpeg_quality": 80})  # the other option is ignored
    assert "canny" in api.controlnet_module_list()


def test_saved_images_go_only_into_the_outputs_folder(api, a1111):
    api.txt2img(prompt="kept on the server", seed=9, save_images=True, **SMALL)
    ctx = a1111[1]
    assert ctx.saver.wait(30)
    saved = ctx.outputs.list_recent(5)
    assert saved[0]["parameters"]["prompt"] == "kept on the server"
    assert saved[0]["path"].is_relative_to(ctx.outputs.root.resolve())


# --- each error case, by raw HTTP ---


@pytest.mark.parametrize("body, status, field", [
    ({"prompt": "x", "width": 1001}, 422, "width"),
    ({"prompt": "x", "width": "wide"}, 422, "width"),
    ({"prompt": "x", "steps": 0}, 422, "steps"),
    ({"prompt": "x", "cfg_scale": 99}, 422, "cfg_scale"),
    ({"prompt": "x", "batch_size": 9}, 422, "batch_size"),
    ({"prompt": "x", "n_iter": 3, "batch_size": 3}, 422, "n_iter"),
    ({"prompt": "x", "seed": 2**40}, 422, "seed"),
    ({"prompt": ""}, 422, "prompt"),
    ({"prompt": "x" * 6000}, 422, "prompt"),
    ({"prompt": "x", "sampler_name": "LMS"}, 422, "sampler_name"),
    ({"prompt": "x", "script_name": "x/y/z plot"}, 422, "script_name"),
    ({"prompt": "x", "alwayson_scripts": {"ADetailer": {"args": [True]}}}, 422, "alwayson_scripts.ADetailer"),
    ({"prompt": "x", "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"}}, 422,
     "override_settings.sd_model_checkpoint"),
])
def test_txt2img_refuses_bad_values_naming_the_field(a1111, body, status, field):
    answer = post(a1111, "/sdapi/v1/txt2img", {**SMALL, **body})
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field and answer.json()["detail"].startswith(field)


@pytest.mark.parametrize("body, field", [
    ({"init_images": []}, "init_images"),
    ({"init_images": ["not base64!"]}, "init_images"),
    ({"init_images": ["/etc/passwd"]}, "init_images"),
    ({"init_images": ["file:///etc/passwd"]}, "init_images"),
    ({"init_images": ["https://example.com/cat.png"]}, "init_images"),
    ({"init_images": [base64.b64encode(b"<svg></svg>").decode()]}, "init_images"),
    ({"denoising_strength": 0}, "denoising_strength"),
])
def test_img2img_refuses_bad_images_and_values_naming_the_field(a1111, init_image, body, field):
    answer = post(a1111, "/sdapi/v1/img2img", {"prompt": "x", **SMALL, "init_images": [b64(init_image)], **body})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field


def test_broken_json_and_huge_bodies_are_refused(a1111):
    answer = httpx.post(f"{a1111[0]}/sdapi/v1/txt2img", content=b"{not json", timeout=30)
    assert answer.status_code == 422 and "JSON" in answer.json()["detail"]
    settings = a1111[1].settings
    huge = b'{"prompt": "' + b"x" * (settings.limits.max_upload_bytes * 9) + b'"}'
    assert httpx.post(f"{a1111[0]}/sdapi/v1/txt2img", content=huge, timeout=60).status_code == 413


def test_png_info_refuses_what_is_not_an_image(a1111):
    for value in ["", "nope", base64.b64encode(b"plain text").decode()]:
        answer = post(a1111, "/sdapi/v1/png-info", {"image": value})
        assert answer.status_code == 422 and answer.json()["field"] == "image", answer.text


def test_save_images_is_ignored_with_a_note_when_saving_is_off(settings, manager):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from kolors_app.api.a1111 import a1111_router
    from kolors_app.ui.runner import AppContext

    ctx = AppContext(dataclasses.replace(settings, save_outputs=False), manager)
    app = FastAPI()
    app.include_router(a1111_router(ctx))
    answer = TestClient(app).post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "save_images": True})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["images"]) == 1
    assert json.loads(answer.json()["info"])["warnings"] == [
        "save_images: saving images is off on this server; the images were not saved"]


@pytest.mark.parametrize("sampler, schedule, runs, note", [
    ("DDIM", "normal", "DDIM", "scheduler 'normal' is not available here"),  # SillyTavern's defaults
    ("Euler a", "Karras", "Euler a", "Schedule type 'Karras' is not available for 'Euler a'"),  # Open WebUI's
    ("Euler", "Exponential", "Euler", "scheduler 'Exponential' is not available here"),
    ("DPM++ 2M", "Karras", "DPM++ 2M Karras", None),
])
def test_schedule_types_run_as_a1111_would_with_a_note(a1111, sampler, schedule, runs, note):
    answer = post(a1111, "/sdapi/v1/txt2img", {"prompt": "a bird", "seed": 1, **SMALL, "sampler_name": sampler,
                                               "scheduler": schedule})
    assert answer.status_code == 200, answer.text
    image = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
    assert written_parameters(image)["scheduler"] == runs
    warnings = json.loads(answer.json()["info"])["warnings"]
    assert (note is None and warnings == []) or any(text.startswith(note) for text in warnings), warnings


def test_clients_default_credentials_and_config_calls_are_answered(a1111):
    # Open WebUI and SillyTavern send `Basic ` + base64("") without credentials; HTTP trims the space.
    empty = {"Authorization": "Basic"}
    assert httpx.get(f"{a1111[0]}/sdapi/v1/options", headers=empty).status_code == 200
    assert httpx.get(f"{a1111[0]}/sdapi/v1/sd-vae", headers=empty).json() == []
    assert httpx.get(f"{a1111[0]}/sdapi/v1/sd-modules", headers=empty).json() == []
    options = httpx.get(f"{a1111[0]}/sdapi/v1/options").json()
    assert httpx.post(f"{a1111[0]}/sdapi/v1/options", json={**options, "sd_model_checkpoint": ""}).status_code == 200
    refused = httpx.post(f"{a1111[0]}/sdapi/v1/options", json={"sd_model_checkpoint": "sd_xl_base_1.0"})
    assert refused.status_code == 422 and refused.json()["field"] == "sd_model_checkpoint"


def test_the_none_upscaler_resizes_like_lanczos(a1111):
    answers = [post(a1111, "/sdapi/v1/txt2img", {"prompt": "a castle", "seed": 3, **SMALL, "enable_hr": True,
                                                 "hr_scale": 1.5, "hr_upscaler": name, "hr_second_pass_steps": 2})
               for name in ("None", "Lanczos")]
    assert [answer.status_code for answer in answers] == [200, 200]
    first, second = (Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0]))) for answer in answers)
    assert first.size == (384, 384) and np.array_equal(np.asarray(first), np.asarray(second))


def test_api_auth_is_required_when_set(settings, manager):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from kolors_app.api.a1111 import a1111_router
    from kolors_app.ui.runner import AppContext

    ctx = AppContext(dataclasses.replace(settings, api_auth=(Login("robot", "s3cret"), Login("other", "pw"))), manager)
    app = FastAPI()
    app.include_router(a1111_router(ctx))
    client = TestClient(app)
    assert client.get("/sdapi/v1/sd-models").status_code == 401
    assert client.get("/sdapi/v1/sd-models", auth=("robot", "wrong")).status_code == 401
    assert client.get("/sdapi/v1/sd-models", auth=("other", "pw")).status_code == 200
    assert client.get("/sdapi/v1/sd-models", headers={"Authorization": "Basic"}).status_code == 401


def test_api_is_off_by_default_and_needs_auth_on_a_share_link():
    from kolors_app.core.config import SettingsError, load_settings

    assert load_settings([])[0].api is False
    with pytest.raises(SettingsError, match="api-auth"):
        load_settings(["--api", "--share"])
    assert load_settings(["--api", "--share", "--api-auth", "u:p"])[0].api


def test_no_a1111_routes_without_the_flag(served):
    assert httpx.get(f"{served.url}sdapi/v1/sd-models", timeout=30).status_code == 404


def test_info_is_a1111_json_text(a1111):
    answer = post(a1111, "/sdapi/v1/txt2img", {"prompt": "a boat", "seed": 11, **SMALL})
    assert answer.status_code == 200
    info = json.loads(answer.json()["info"])
    assert info["seed"] == 11 and info["all_seeds"] == [11] and info["sd_model_name"] == "Kolors"
    image = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
    assert image.info["parameters"] == info["infotexts"][0]


def test_inpainting_through_webuiapi_repaints_only_the_mask(api, init_image):
    mask = Image.new("L", init_image.size, 0)
    mask.paste(255, (64, 64, 192, 192))
    result = api.img2img(images=[init_image], mask_image=mask, prompt="a red ball", denoising_strength=0.99,
                         mask_blur=4, inpainting_fill=1, inpaint_full_res=False, seed=2, **SMALL)
    assert result.image.size == (256, 256)
    pixels, before = np.asarray(result.image.convert("RGB")).astype(int), np.asarray(init_image).astype(int)
    assert np.abs(pixels[:32, :32] - before[:32, :32]).max() < 40  # unmasked pixels are kept
    assert np.abs(pixels[96:160, 96:160] - before[96:160, 96:160]).mean() > 10  # the masked square is repainted
    stored = read_image_parameters(result.image).parameters
    assert stored["mask_blur"] == 4 and stored["inpaint_area"] == "whole"


def test_a_controlnet_unit_through_webuiapi(api, a1111, init_image):
    assert httpx.get(f"{a1111[0]}/controlnet/model_list").json()["model_list"][0] == "Kolors-ControlNet-Canny"
    edges = Image.new("RGB", (256, 256), "black")
    edges.paste((255, 255, 255), (64, 64, 192, 192))  # canny finds the square's outline
    unit = webuiapi.ControlNetUnit(image=edges, module="canny", model="Kolors-ControlNet-Canny", weight=0.7,
                                   guidance_start=0.0, guidance_end=1.0)
    result = api.txt2img(prompt="a house", controlnet_units=[unit], seed=4, **SMALL)
    plain = post(a1111, "/sdapi/v1/txt2img", {"prompt": "a house", "seed": 4, "cfg_scale": 7.0, **SMALL})
    plain_pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(plain.json()["images"][0]))))
    assert result.image.size == (256, 256)
    stored = read_image_parameters(result.image).parameters
    assert stored["control_type"] == "canny" and stored["control_scale"] == 0.7 and stored["control_end"] == 1.0
    assert not np.array_equal(np.asarray(result.image), plain_pixels)  # the unit steered the run


def test_skip_ends_only_the_current_iteration(api):
    answers = {}
    worker = threading.Thread(target=lambda: answers.update(
        result=api.txt2img(prompt="a skipped run", seed=20, width=256, height=256, steps=150, n_iter=2)))
    worker.start()
    assert wait_until(lambda: api.get_progress()["state"]["sampling_step"] >= 1, timeout=60)
    assert httpx.post(f"{api.baseurl}/skip", timeout=30).json() == {}
    assert wait_until(lambda: api.get_progress()["state"]["job_no"] == 1, timeout=60), \
        "the second iteration never began"
    assert api.get_progress()["state"]["skipped"] is False  # the new iteration runs
    api.interrupt()
    worker.join(60)
    result = answers["result"]  # both iterations unfinished: the skipped one and the interrupted one
    assert result.info["interrupted"] is True and len(result.images) == 2
    assert [written_parameters(image)["seed"] for image in result.images] == [20, 21]


def test_skip_without_a_job_is_harmless(a1111):
    assert post(a1111, "/sdapi/v1/skip", {}).json() == {}


def test_loras_and_upscalers_list_the_folders(api, a1111):
    assert [lora["name"] for lora in api.get_loras()] == ["tiny-style"]
    assert all(lora["path"] is None for lora in api.get_loras())  # no server paths
    names = [upscaler["name"] for upscaler in api.get_upscalers()]
    assert names == ["None", "Lanczos", "tiny-esrgan-4x"]  # A1111's "None" first: clients put latent modes after it
    assert httpx.get(f"{a1111[0]}/sdapi/v1/latent-upscale-modes").json() == [{"name": "Latent"}]


def test_a_lora_tag_in_the_prompt_changes_the_image_and_is_recorded(api):
    plain = api.txt2img(prompt="a fox", seed=8, **SMALL)
    styled = api.txt2img(prompt="a fox <lora:tiny-style:1.5>", seed=8, **SMALL)
    assert not np.array_equal(np.asarray(plain.image), np.asarray(styled.image))
    stored = written_parameters(styled.image)
    assert stored["final_prompt"] == "a fox" and [lora["name"] for lora in stored["loras"]] == ["tiny-style"]
    again = api.txt2img(prompt="a fox", seed=8, **SMALL)  # the LoRA is switched off again
    assert np.array_equal(np.asarray(plain.image), np.asarray(again.image))


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_fix_fields_run_a_larger_second_pass(a1111, upscaler):
    answer = post(a1111, "/sdapi/v1/txt2img", {"prompt": "a castle", "seed": 3, **SMALL, "enable_hr": True,
                                               "hr_scale": 1.5, "hr_upscaler": upscaler, "hr_second_pass_steps": 2,
                                               "denoising_strength": 0.5})
    assert answer.status_code == 200, answer.text[:500]
    image = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
    assert image.size == (384, 384)
    stored = written_parameters(image)
    assert {key: stored[key] for key in ("hires_upscale", "hires_upscaler", "hires_steps", "hires_denoising_strength")
            } == {"hires_upscale": 1.5, "hires_upscaler": upscaler, "hires_steps": 2, "hires_denoising_strength": 0.5}
    assert "Hires upscaler: " + upscaler in image.info["parameters"]


def test_hires_resize_fields_give_the_factor(a1111):
    answer = post(a1111, "/sdapi/v1/txt2img", {"prompt": "a castle", "seed": 3, **SMALL, "enable_hr": True,
                                               "hr_resize_x": 512, "hr_second_pass_steps": 2})
    assert answer.status_code == 200, answer.text[:500]
    assert Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0]))).size == (512, 512)


def test_a1111_package_does_not_import_gradio():
    import subprocess
    import sys

    code = "import sys, kolors_app.api.a1111; print('gradio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


UNIT = {"module": "canny", "model": "Kolors-ControlNet-Canny"}


@pytest.mark.parametrize("path, body, field", [
    ("txt2img", {"enable_hr": True, "hr_scale": 50}, "hr_scale"),
    ("txt2img", {"enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler"),
    ("txt2img", {"enable_hr": True, "hr_second_pass_steps": -1}, "hr_second_pass_steps"),
    ("txt2img", {"enable_hr": True, "denoising_strength": 0}, "denoising_strength"),
    ("txt2img", {"enable_hr": True, "hr_resize_x": 512, "hr_resize_y": 300}, "hr_resize_x"),
    ("txt2img", {"prompt": "a fox <lora:missing:0.5>"}, "prompt"),
    ("txt2img", {"prompt": "a fox <lora:tiny-style:9>"}, "prompt"),
    ("txt2img", {"cn": {**UNIT, "module": "scribble"}}, "alwayson_scripts.controlnet.args[0].module"),
    ("txt2img", {"cn": {**UNIT, "module": "none", "model": "sd15_scribble"}},
     "alwayson_scripts.controlnet.args[0].model"),
    ("txt2img", {"cn": {**UNIT, "weight": 5}}, "alwayson_scripts.controlnet.args[0].weight"),
    ("txt2img", {"cn": {**UNIT, "guidance_start": 0.8, "guidance_end": 0.2}},
     "alwayson_scripts.controlnet.args[0].guidance_end"),
    ("txt2img", {"cn": {**UNIT, "threshold_a": "low"}}, "alwayson_scripts.controlnet.args[0].threshold_a"),
    ("txt2img", {"cn": {**UNIT, "image": "not base64!"}}, "alwayson_scripts.controlnet.args[0].image"),
    ("img2img", {"mask": "not base64!"}, "mask"),
    ("img2img", {"mask": "MASK", "mask_blur": 100}, "mask_blur"),
    ("img2img", {"mask": "MASK", "inpaint_full_res_padding": 999}, "inpaint_full_res_padding"),
])
def test_control_inpaint_hires_and_lora_errors_name_the_a1111_field(a1111, init_image, path, body, field):
    body = dict(body)
    if "cn" in body:
        unit = {"image": b64(init_image), **body.pop("cn")}
        body["alwayson_scripts"] = {"controlnet": {"args": [{"enabled": False}, unit]}}
        field = field.replace("args[0]", "args[1]")  # the index as sent, also past a disabled unit
    if body.get("mask") == "MASK":
        body["mask"] = b64(init_image.convert("L"))
    if path == "img2img":
        body["init_images"] = [b64(init_image)]
    answer = post(a1111, f"/sdapi/v1/{path}", {"prompt": "x", **SMALL, **body})
    assert answer.status_code == 422, answer.text[:500]
    assert answer.json()["field"] == field and answer.json()["detail"].startswith(field), answer.json()
