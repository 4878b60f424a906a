"""The UI built but not launched, on the tiny model: its app and API, and generating through its wired handlers."""

import dataclasses
import inspect
import json
import re
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from ui_handlers import ENDPOINTS, SMALL, FakeProgress, final, gallery_files, gradient, handler, upload

from kolors_app.engine.generation import generate
from kolors_app.metadata.png_chunks import read_image_parameters
from kolors_app.core.request import GeneratedImage, GenerationRequest, GenerationResult
from kolors_app.ui.i18n import STRINGS
from kolors_app.ui.runner import AppContext, finish, run_request

def without_final(parameters: dict) -> dict:
    """The parameters less the expanded prompts (final_prompt...), which the PNG reader leaves out."""
    return {key: value for key, value in parameters.items() if not key.startswith("final_")}


# --- The app and its API ---


def test_app_is_built_not_launched_with_the_three_public_endpoints(built):
    app, ctx = built
    assert isinstance(app, gr.Blocks) and not app.is_running
    assert ctx.manager.settings.model == ctx.settings.model
    public = {f.api_name: f for f in app.fns.values() if f.api_visibility == "public"}
    assert set(public) == set(ENDPOINTS)
    for name, parameters in ENDPOINTS.items():
        signature = [p for p in inspect.signature(public[name].fn).parameters if p not in ("request", "progress")]
        assert signature == parameters
        assert [block.elem_id.split("-", 1)[1] for block in public[name].inputs[:2]] == ["prompt", "negative"]
        # Every model run waits in one queue: one generation at a time on the GPU.
        assert public[name].concurrency_id == "gpu" and public[name].queue


def test_api_lists_the_three_endpoints_with_their_parameter_names(live_app):
    from gradio_client import Client

    api = Client(live_app, verbose=False).view_api(print_info=False, return_format="dict")
    named = api["named_endpoints"]
    for name, parameters in ENDPOINTS.items():
        assert [p["parameter_name"] for p in named[f"/{name}"]["parameters"]] == parameters
    # Nothing but the three generation endpoints is offered to API clients.
    assert set(named) == {f"/{name}" for name in ENDPOINTS}


def test_every_interface_string_exists_in_english_and_chinese(built):
    app, _ = built
    # default=str writes gradio's I18nData as its `__i18n__{... "key": ...}` marker.
    config = json.dumps(app.config, default=str)
    used = set(re.findall(r'translation_metadata\\?", \\?"key\\?": \\?"(\w+)', config))
    assert {"title", "text_to_image", "generate", "stop", "history", "png_info"} <= used
    assert used <= set(STRINGS["en"]) and used <= set(STRINGS["zh"])
    assert set(STRINGS["en"]) == set(STRINGS["zh"])
    assert STRINGS["zh"]["text_to_image"] == "文生图"


# --- Generating ---


def test_text_to_image_shows_previews_then_pngs_captioned_with_their_seeds(built, t2i_run, manager):
    app, _ = built
    outputs, progress = t2i_run
    assert progress.steps == [(step, 5) for step in range(1, 6)]
    previews = [gallery for gallery, _ in outputs if isinstance(gallery, list) and gallery
                and gallery[0][1].startswith("preview")]
    # Previews by time (at most two a second), the first one at once: a short run shows one or two.
    captions = [caption for [(_, caption)] in previews]
    assert captions[:1] == ["preview, step 1"] and set(captions) <= {f"preview, step {s}" for s in range(1, 5)}
    # The previews' files are gone once the run ended (the final PNGs replace them): they do not pile up on disk.
    assert not any(Path(gallery[0][0]).exists() for gallery in previews)
    gallery, result = final(outputs)
    assert [caption for _, caption in gallery] == ["seed 42", "seed 43"]
    assert [image["seed"] for image in result["images"]] == [42, 43]
    first = {key: value for key, value in result["images"][0].items() if not key.startswith("final_")}
    assert first == {"mode": "text_to_image", "prompt": "一只红色的狐狸, a red fox", "negative_prompt": "blurry",
                     "width": 256, "height": 256, "num_inference_steps": 5, "guidance_scale": 5.0,
                     "scheduler": "Euler", "seed": 42, "num_images": 1, "model": "Kolors"}
    # Same pixels as the core called without the UI.
    expected = generate(manager, GenerationRequest("一只红色的狐狸, a red fox", "blurry", num_inference_steps=5,
                                                    seed=42, num_images=2, **SMALL)).images[0].image
    with Image.open(gallery[0][0]) as shown:
        assert shown.size == (256, 256)
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(expected))


def test_gallery_files_are_pngs_that_carry_their_parameters(built, t2i_run):
    app, _ = built
    gallery, result = final(t2i_run[0])
    files = gallery_files(app, "text_to_image-gallery", gallery)
    assert [caption for _, caption in files] == ["seed 42", "seed 43"]
    for (path, _), parameters in zip(files, result["images"]):
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        found = read_image_parameters(path)
        assert found.parameters == without_final(parameters)
        assert found.text.startswith("一只红色的狐狸, a red fox\nNegative prompt: blurry\nSteps: 5, Sampler: Euler")


def test_random_seed_then_reuse_last_seed(built):
    app, _ = built
    text_to_image = app.studio_tabs["text_to_image"].handler
    runs = [final(list(text_to_image("a cat", "", num_inference_steps=1, seed=-1, num_images=1, request=None,
                                     progress=None, **SMALL)))[1] for _ in range(2)]
    seeds = [run["images"][0]["seed"] for run in runs]
    assert seeds[0] != seeds[1] and all(0 <= seed < 2**32 for seed in seeds)
    assert handler(app, "text_to_image-random-seed", "click")() == -1
    reuse = handler(app, "text_to_image-reuse-seed", "click")  # "Use this image's seed"
    assert reuse(runs[1], 0) == seeds[1] and reuse(runs[1], 5) == seeds[1]
    assert isinstance(reuse(None, 0), type(gr.skip())) and isinstance(reuse({"images": []}, 0), type(gr.skip()))


def press_stop(app: gr.Blocks, mode: str, session: str) -> None:
    """Click Stop as gradio does: it passes the visitor's request only to a parameter that asks for it."""
    from gradio.helpers import special_args

    stop = handler(app, f"{mode}-stop", "click")
    inputs, *_ = special_args(stop, [], request=gr.Request(session_hash=session))
    stop(*inputs)


def test_stop_ends_the_visitors_run_with_no_images_and_frees_the_model(built, manager):
    app, ctx = built
    # Another visitor's Stop (step 1) leaves this run alone; this visitor's (step 3) ends it.
    progress = FakeProgress(on_step=lambda step, total: step in (1, 3) and press_stop(
        app, "text_to_image", "visitor-2" if step == 1 else "visitor-1"))
    started = time.perf_counter()
    outputs = list(run_request(ctx, GenerationRequest("a fox", num_inference_steps=150, seed=1, **SMALL),
                               gr.Request(session_hash="visitor-1"), progress))
    # Stop keeps what the run had: its last preview, captioned with the step it stopped at.
    gallery, summary = final(outputs)
    assert summary == {"images": [], "stopped": True, "stopped_at_step": 3, "warnings": []}
    assert [caption for _, caption in gallery] == ["stopped at step 3/150"] and gallery[0][0].size == (256, 256)
    assert max(step for step, _ in progress.steps) == 3
    assert time.perf_counter() - started < 60
    assert manager.run_lock.acquire(timeout=1)
    manager.run_lock.release()


def test_closing_a_run_early_stops_its_worker(built, manager):
    """What gradio does when Stop cancels the event or the visitor leaves: the model must not run on."""
    _, ctx = built
    run = run_request(ctx, GenerationRequest("a fox", num_inference_steps=150, seed=1, **SMALL), None, None)
    next(run)  # the first step is done
    run.close()
    assert manager.run_lock.acquire(timeout=30), "the worker kept the model after its run was closed"
    manager.run_lock.release()


def test_invalid_input_is_refused_naming_the_field_before_any_model_work(built):
    app, _ = built
    text_to_image = app.studio_tabs["text_to_image"].handler
    cases = {"width": dict(SMALL, width=300), "num_inference_steps": dict(SMALL, num_inference_steps=0)}
    for field, values in cases.items():
        values.setdefault("num_inference_steps", 2)
        with pytest.raises(gr.Error, match=field):
            list(text_to_image("a fox", "", seed=1, num_images=1, request=None, progress=None, **values))
    with pytest.raises(gr.Error, match="prompt"):
        list(text_to_image("  ", "", num_inference_steps=2, seed=1, num_images=1, request=None, progress=None,
                           **SMALL))


def test_a_preview_is_a_png_in_the_served_folder_while_the_run_goes(built):
    app, ctx = built
    ctx.update_seconds = ctx.preview_seconds = 0
    run = app.studio_tabs["text_to_image"].handler("a red fox", "", num_inference_steps=4, seed=3, num_images=1,
                                                   request=None, progress=FakeProgress(), **SMALL)
    gallery = next(item for item, _ in run if isinstance(item, list) and item and item[0][1].startswith("preview"))
    # Encoded by us into gradio's served folder, so gradio neither encodes nor copies it.
    path = Path(gallery[0][0])
    assert path.is_relative_to(Path(gr.utils.get_upload_folder()).resolve())
    with Image.open(path) as shown:
        assert shown.format == "PNG" and shown.size == (256, 256) and len(set(shown.getdata())) > 1
    rest = list(run)
    assert final(rest)[1]["images"][0]["seed"] == 3
    assert not path.exists() and not path.parent.exists()


def test_image_to_image_and_ip_adapter_handlers(built, upload_dir):
    app, _ = built
    init = upload(upload_dir, gradient(), "init.png")
    reference = upload(upload_dir, Image.new("RGB", (300, 200), (200, 30, 30)), "reference.png")
    image_to_image = app.studio_tabs["image_to_image"].handler
    gallery, result = final(list(image_to_image("a painting", "", num_inference_steps=4, seed=7, num_images=1,
                                                image=init, strength=0.5, request=None, progress=None, **SMALL)))
    assert gallery[0][1] == "seed 7" and Image.open(gallery[0][0]).size == (256, 256)
    assert result["images"][0]["mode"] == "image_to_image" and result["images"][0]["strength"] == 0.5
    # The browser sends gradio's file payload, not a bare path.
    payload = {"path": init, "meta": {"_type": "gradio.FileData"}}
    same = final(list(image_to_image("a painting", "", num_inference_steps=4, seed=7, num_images=1, image=payload,
                                     strength=0.5, request=None, progress=None, **SMALL)))[0]
    assert np.array_equal(np.asarray(Image.open(same[0][0])), np.asarray(Image.open(gallery[0][0])))

    ip_adapter = app.studio_tabs["ip_adapter"].handler
    gallery, result = final(list(ip_adapter("", "", num_inference_steps=2, seed=3, num_images=1,
                                            ip_adapter_image=reference, ip_adapter_scale=0.7, image=None,
                                            strength=0.7, request=None, progress=None, **SMALL)))
    assert gallery[0][1] == "seed 3"
    assert result["images"][0]["mode"] == "ip_adapter" and result["images"][0]["ip_adapter_scale"] == 0.7


def test_image_handlers_refuse_missing_images_and_files_outside_the_uploads(built, tmp_path):
    app, _ = built
    image_to_image = app.studio_tabs["image_to_image"].handler
    outside = tmp_path / "secret.png"
    gradient().save(outside)
    for image, message in [(None, "image: an image is required"), (str(outside), "image")]:
        with pytest.raises(gr.Error, match=message):
            list(image_to_image("a painting", "", num_inference_steps=4, seed=7, num_images=1, image=image,
                                strength=0.5, request=None, progress=None, **SMALL))
    ip_adapter = app.studio_tabs["ip_adapter"].handler
    with pytest.raises(gr.Error, match="ip_adapter_image: an image is required"):
        list(ip_adapter("", "", num_inference_steps=2, seed=3, num_images=1, ip_adapter_image=None,
                        ip_adapter_scale=0.7, image=None, strength=0.7, request=None, progress=None, **SMALL))


def test_finished_runs_are_saved_to_the_outputs_folder_when_enabled(settings, manager, t2i_run, tmp_path):
    gallery, result = final(t2i_run[0])
    ctx = AppContext(dataclasses.replace(settings, save_outputs=True, outputs_dir=tmp_path), manager)
    request = GenerationRequest("一只红色的狐狸, a red fox", "blurry", **SMALL)
    images = [GeneratedImage(Image.open(path), p["seed"], p) for (path, _), p in zip(gallery, result["images"])]
    finish(ctx, GenerationResult(images, request))
    assert ctx.saver.wait(30)  # written in the background, after the answer
    saved = sorted(tmp_path.rglob("*.png"))
    assert [read_image_parameters(path).parameters for path in saved] == [without_final(p) for p in result["images"]]
    assert finish(ctx, GenerationResult([], request, stopped=True)) == ([], {
        "images": [], "stopped": True, "stopped_at_step": 0, "warnings": []})
