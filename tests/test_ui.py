"""The UI built but not launched, on the tiny model: its wired handlers called directly, results checked."""

import dataclasses
import inspect
import json
import re
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from kolors_app.generation import generate
from kolors_app.metadata import read_image_parameters
from kolors_app.params import GeneratedImage, GenerationResult, TextToImageRequest
from kolors_app.schedulers import RECOMMENDED, SCHEDULER_NAMES
from kolors_app.server import build
from kolors_app.ui import history_tab
from kolors_app.ui.controls import ASPECT_PRESETS, CUSTOM, aspect_for, selected_image
from kolors_app.ui.i18n import STRINGS
from kolors_app.ui.png_info_tab import parameters_of
from kolors_app.ui.runner import AppContext, finish, run_request

SMALL = dict(width=256, height=256, guidance_scale=5.0, scheduler="Euler")
REQUEST_PARAMETERS = ["prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale",
                      "scheduler", "seed", "num_images"]
ENDPOINTS = {
    "text_to_image": REQUEST_PARAMETERS,
    "image_to_image": REQUEST_PARAMETERS + ["image", "strength"],
    "ip_adapter": REQUEST_PARAMETERS + ["ip_adapter_image", "ip_adapter_scale", "image", "strength"],
}


class FakeProgress:
    """Stands in for gr.Progress: records every (step, total) and can act on a step."""

    def __init__(self, on_step=None):
        self.steps = []
        self.on_step = on_step

    def __call__(self, value, desc=None, unit=None, **_):
        self.steps.append(value)
        if self.on_step:
            self.on_step(*value)


# --- Finding the wired handlers of the built app ---


def component(app: gr.Blocks, elem_id: str):
    return next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == elem_id)


def handler(app: gr.Blocks, elem_id: str, event: str):
    """The function the app runs when `event` fires on the component `elem_id`."""
    target = component(app, elem_id)._id
    found = [f.fn for f in app.fns.values() if (target, event) in f.targets and f.fn is not None]
    assert len(found) == 1, f"{len(found)} handlers for {elem_id}.{event}"
    return found[0]


def by_id(updates: dict) -> dict:
    """Restore updates keyed by elem_id ('tabs' for the tab strip)."""
    return {("tabs" if isinstance(block, gr.Tabs) else block.elem_id): value for block, value in updates.items()}


def final(outputs: list) -> tuple:
    """The last (gallery, result) pair a run yielded."""
    return outputs[-1]


def gallery_files(app: gr.Blocks, elem_id: str, items: list) -> list[tuple[str, str]]:
    """What the browser gets for gallery items (gradio writes the PNG files), as the gallery sends them back."""
    data = component(app, elem_id).postprocess(items)
    return [(item.image.path, item.caption) for item in data.root]


def upload(app_dir: Path, image: Image.Image, name: str) -> str:
    """An image saved where gradio keeps uploads (the only folder the handlers read files from)."""
    folder = app_dir / "upload-test"
    folder.mkdir(exist_ok=True)
    path = folder / name
    image.save(path)
    return str(path)


def gradient(size=(256, 256)) -> Image.Image:
    ramp = np.linspace(0, 255, size[0], dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(ramp, (size[1], 1))] * 3, axis=-1))


# --- Fixtures ---


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory):
    """gradio's upload and cache folder, private to this module."""
    folder = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def built(settings, manager, upload_dir):
    """(app, ctx): the whole UI around the session's tiny manager, built but never launched."""
    return build(settings, manager)


@pytest.fixture(scope="module")
def t2i_run(built):
    """One text-to-image run of two images through the tab's own handler: (outputs, progress)."""
    app, _ = built
    progress = FakeProgress()
    text_to_image = handler(app, "text_to_image-generate", "click")
    outputs = list(text_to_image("一只红色的狐狸, a red fox", "blurry", num_inference_steps=5, seed=42, num_images=2,
                                 request=None, progress=progress, **SMALL))
    return outputs, progress


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
    assert [caption for [(_, caption)] in previews] == [f"preview, step {step}" for step in range(1, 5)]
    gallery, result = final(outputs)
    assert [caption for _, caption in gallery] == ["seed 42", "seed 43"]
    assert [image["seed"] for image in result["images"]] == [42, 43]
    first = result["images"][0]
    assert first == {"mode": "text_to_image", "prompt": "一只红色的狐狸, a red fox", "negative_prompt": "blurry",
                     "width": 256, "height": 256, "num_inference_steps": 5, "guidance_scale": 5.0,
                     "scheduler": "Euler", "seed": 42, "num_images": 1, "model": "Kolors"}
    # Same pixels as the core called without the UI.
    expected = generate(manager, TextToImageRequest("一只红色的狐狸, a red fox", "blurry", num_inference_steps=5,
                                                    seed=42, num_images=2, **SMALL)).images[0].image
    assert gallery[0][0].size == (256, 256)
    assert np.array_equal(np.asarray(gallery[0][0]), np.asarray(expected))


def test_gallery_files_are_pngs_that_carry_their_parameters(built, t2i_run):
    app, _ = built
    gallery, result = final(t2i_run[0])
    files = gallery_files(app, "text_to_image-gallery", gallery)
    assert [caption for _, caption in files] == ["seed 42", "seed 43"]
    for (path, _), parameters in zip(files, result["images"]):
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        found = read_image_parameters(path)
        assert found.parameters == parameters
        assert found.text.startswith("一只红色的狐狸, a red fox\nNegative prompt: blurry\nSteps: 5, Sampler: Euler")


def test_random_seed_then_reuse_last_seed(built):
    app, _ = built
    text_to_image = handler(app, "text_to_image-generate", "click")
    runs = [final(list(text_to_image("a cat", "", num_inference_steps=1, seed=-1, num_images=1, request=None,
                                     progress=None, **SMALL)))[1] for _ in range(2)]
    seeds = [run["images"][0]["seed"] for run in runs]
    assert seeds[0] != seeds[1] and all(0 <= seed < 2**32 for seed in seeds)
    assert handler(app, "text_to_image-random-seed", "click")() == -1
    reuse = handler(app, "text_to_image-reuse-seed", "click")
    assert reuse(runs[1]) == seeds[1]
    assert isinstance(reuse(None), type(gr.skip())) and isinstance(reuse({"images": []}), type(gr.skip()))


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
    outputs = list(run_request(ctx, TextToImageRequest("a fox", num_inference_steps=150, seed=1, **SMALL),
                               gr.Request(session_hash="visitor-1"), progress))
    assert final(outputs) == ([], {"images": [], "stopped": True, "warnings": []})
    assert max(step for step, _ in progress.steps) == 3
    assert time.perf_counter() - started < 60
    assert manager.run_lock.acquire(timeout=1)
    manager.run_lock.release()


def test_closing_a_run_early_stops_its_worker(built, manager):
    """What gradio does when Stop cancels the event or the visitor leaves: the model must not run on."""
    _, ctx = built
    run = run_request(ctx, TextToImageRequest("a fox", num_inference_steps=150, seed=1, **SMALL), None, None)
    next(run)  # the first step is done
    run.close()
    assert manager.run_lock.acquire(timeout=30), "the worker kept the model after its run was closed"
    manager.run_lock.release()


def test_invalid_input_is_refused_naming_the_field_before_any_model_work(built):
    app, _ = built
    text_to_image = handler(app, "text_to_image-generate", "click")
    cases = {"width": dict(SMALL, width=300), "num_inference_steps": dict(SMALL, num_inference_steps=0)}
    for field, values in cases.items():
        values.setdefault("num_inference_steps", 2)
        with pytest.raises(gr.Error, match=field):
            list(text_to_image("a fox", "", seed=1, num_images=1, request=None, progress=None, **values))
    with pytest.raises(gr.Error, match="prompt"):
        list(text_to_image("  ", "", num_inference_steps=2, seed=1, num_images=1, request=None, progress=None,
                           **SMALL))


def test_image_to_image_and_ip_adapter_handlers(built, upload_dir):
    app, _ = built
    init = upload(upload_dir, gradient(), "init.png")
    reference = upload(upload_dir, Image.new("RGB", (300, 200), (200, 30, 30)), "reference.png")
    image_to_image = handler(app, "image_to_image-generate", "click")
    gallery, result = final(list(image_to_image("a painting", "", num_inference_steps=4, seed=7, num_images=1,
                                                image=init, strength=0.5, request=None, progress=None, **SMALL)))
    assert gallery[0][1] == "seed 7" and gallery[0][0].size == (256, 256)
    assert result["images"][0]["mode"] == "image_to_image" and result["images"][0]["strength"] == 0.5
    # The browser sends gradio's file payload, not a bare path.
    payload = {"path": init, "meta": {"_type": "gradio.FileData"}}
    same = final(list(image_to_image("a painting", "", num_inference_steps=4, seed=7, num_images=1, image=payload,
                                     strength=0.5, request=None, progress=None, **SMALL)))[0]
    assert np.array_equal(np.asarray(same[0][0]), np.asarray(gallery[0][0]))

    ip_adapter = handler(app, "ip_adapter-generate", "click")
    gallery, result = final(list(ip_adapter("", "", num_inference_steps=2, seed=3, num_images=1,
                                            ip_adapter_image=reference, ip_adapter_scale=0.7, image=None,
                                            strength=0.7, request=None, progress=None, **SMALL)))
    assert gallery[0][1] == "seed 3"
    assert result["images"][0]["mode"] == "ip_adapter" and result["images"][0]["ip_adapter_scale"] == 0.7


def test_image_handlers_refuse_missing_images_and_files_outside_the_uploads(built, tmp_path):
    app, _ = built
    image_to_image = handler(app, "image_to_image-generate", "click")
    outside = tmp_path / "secret.png"
    gradient().save(outside)
    for image, message in [(None, "image: an image is required"), (str(outside), "image")]:
        with pytest.raises(gr.Error, match=message):
            list(image_to_image("a painting", "", num_inference_steps=4, seed=7, num_images=1, image=image,
                                strength=0.5, request=None, progress=None, **SMALL))
    ip_adapter = handler(app, "ip_adapter-generate", "click")
    with pytest.raises(gr.Error, match="ip_adapter_image: an image is required"):
        list(ip_adapter("", "", num_inference_steps=2, seed=3, num_images=1, ip_adapter_image=None,
                        ip_adapter_scale=0.7, image=None, strength=0.7, request=None, progress=None, **SMALL))


def test_finished_runs_are_saved_to_the_outputs_folder_when_enabled(settings, manager, t2i_run, tmp_path):
    gallery, result = final(t2i_run[0])
    ctx = AppContext(dataclasses.replace(settings, save_outputs=True, outputs_dir=tmp_path), manager)
    request = TextToImageRequest("一只红色的狐狸, a red fox", "blurry", **SMALL)
    images = [GeneratedImage(image, p["seed"], p) for (image, _), p in zip(gallery, result["images"])]
    finish(ctx, GenerationResult(images, request))
    saved = sorted(tmp_path.rglob("*.png"))
    assert [read_image_parameters(path).parameters for path in saved] == result["images"]
    assert finish(ctx, GenerationResult([], request, stopped=True)) == ([], {"images": [], "stopped": True,
                                                                             "warnings": []})


# --- Controls that need no model run ---


def test_token_count_against_256(built, manager):
    app, _ = built
    count = handler(app, "text_to_image-prompt", "change")
    assert count("") == "0 / 256"
    short = manager.tokenizer_length("a red fox")
    assert 0 < short < 20 and count("a red fox") == f"{short} / 256"
    chinese = count("一只红色的狐狸")
    assert re.fullmatch(r"\d+ / 256", chinese) and int(chinese.split()[0]) > 2
    long = count("a red fox " * 100)
    assert int(long.split()[0]) > 256 and "only the first 256 are used" in long


def test_aspect_presets_set_width_and_height(built):
    app, _ = built
    preset = handler(app, "text_to_image-aspect", "change")
    for name, size in ASPECT_PRESETS.items():
        assert preset(name) == list(size)
        assert aspect_for(*size) == name
        assert size[0] % 64 == 0 and size[1] % 64 == 0 and 0.85e6 < size[0] * size[1] < 1.1e6
    assert all(isinstance(value, type(gr.skip())) for value in preset(CUSTOM))
    # Typing a size picks the matching preset, or Custom.
    typed = handler(app, "text_to_image-width", "input")
    assert typed(1344, 768) == "16:9" and typed(256, 256) == CUSTOM


def test_choosing_a_sampler_sets_its_recommended_steps_and_guidance(built):
    app, _ = built
    for mode in ENDPOINTS:
        choose = handler(app, f"{mode}-scheduler", "input")
        for name in SCHEDULER_NAMES:
            assert choose(name) == list(RECOMMENDED[name])
    assert handler(app, "text_to_image-scheduler", "input")("DPM++ 2M Karras") == [25, 6.5]
    assert handler(app, "text_to_image-scheduler", "input")("Euler") == [50, 5.0]


def test_examples_fill_the_prompt_boxes(built):
    app, _ = built
    table = component(app, "text_to_image-examples")
    category, prompt, negative = table.samples[1]
    assert prompt and handler(app, "text_to_image-examples", "click")([category, prompt, negative]) == (prompt,
                                                                                                       negative)


# --- Selecting, restoring, sending ---


def test_selecting_an_image_shows_its_parameters(built, t2i_run):
    app, _ = built
    _, result = final(t2i_run[0])
    select = handler(app, "text_to_image-gallery", "select")
    assert select(result, gr.SelectData(None, {"index": 1, "value": None})) == (result["images"][1], 1)
    assert select(result, gr.SelectData(None, {"index": 9, "value": None})) == (result["images"][0], 0)
    assert select(None, gr.SelectData(None, {"index": 0, "value": None})) == (None, 0)


def test_use_these_settings_restores_into_the_tab_of_the_mode(built, t2i_run):
    app, _ = built
    _, result = final(t2i_run[0])
    restore = handler(app, "text_to_image-use-settings", "click")
    updates = by_id(restore(result["images"][1]))
    assert updates["tabs"].selected == "text_to_image"
    assert {key: updates[f"text_to_image-{key}"] for key in ("prompt", "negative", "seed", "steps", "width")} == {
        "prompt": "一只红色的狐狸, a red fox", "negative": "blurry", "seed": 43, "steps": 5, "width": 256}
    assert updates["text_to_image-aspect"] == CUSTOM

    i2i = dict(result["images"][0], mode="image_to_image", strength=0.35, width=1152, height=896)
    updates = by_id(restore(i2i))
    assert updates["tabs"].selected == "image_to_image"
    assert updates["image_to_image-strength"] == 0.35 and updates["image_to_image-aspect"] == "4:3"
    assert "text_to_image-prompt" not in updates

    ip = dict(result["images"][0], mode="ip_adapter", ip_adapter_scale=1.25, scheduler="DPM++ 2M Karras")
    updates = by_id(restore(ip))
    assert updates["tabs"].selected == "ip_adapter"
    assert updates["ip_adapter-scale"] == 1.25 and updates["ip_adapter-scheduler"] == "DPM++ 2M Karras"

    with pytest.raises(gr.Error, match="Nothing to restore"):
        restore(None)
    with pytest.raises(gr.Error, match="mode"):
        restore({"mode": "video", "prompt": "x"})


def test_send_to_image_to_image_and_ip_adapter(built, t2i_run):
    app, _ = built
    files = gallery_files(app, "text_to_image-gallery", final(t2i_run[0])[0])
    assert selected_image(files, 1) == files[1][0]
    assert selected_image(files, 7) == files[0][0] and selected_image([], 0) is None
    image, tabs = handler(app, "text_to_image-send-i2i", "click")(files, 1)
    assert image == files[1][0] and tabs.selected == "image_to_image"
    image, tabs = handler(app, "text_to_image-send-ip", "click")(files, 0)
    assert image == files[0][0] and tabs.selected == "ip_adapter"


# --- History (kept in the visitor's browser) ---


def test_the_history_store_sits_outside_the_tabs(built):
    """gradio mounts a tab's components when it is opened; a store inside a tab never reaches localStorage."""
    app, _ = built
    [store] = [block for block in app.blocks.values() if isinstance(block, gr.BrowserState)]
    assert store.storage_key == history_tab.STORAGE_KEY
    parent = store.parent
    while parent is not None:
        assert not isinstance(parent, gr.Tab)
        parent = parent.parent


def test_history_records_runs_searches_selects_and_deletes(built, t2i_run):
    app, _ = built
    gallery, result = final(t2i_run[0])
    files = gallery_files(app, "text_to_image-gallery", gallery)
    history, items, ids = history_tab.record_run(result, files, [])
    assert [entry["parameters"] for entry in history] == result["images"]
    assert len(ids) == 2 and [caption.split(" · ")[:2] for _, caption in items] == [
        ["seed 42", "一只红色的狐狸, a red fox"], ["seed 43", "一只红色的狐狸, a red fox"]]
    assert all(isinstance(image, Image.Image) and max(image.size) <= 128 for image, _ in items)
    # A stopped run adds nothing; junk from the browser store is dropped, not trusted.
    assert history_tab.record_run({"images": [], "stopped": True}, [], history)[0] == history
    assert history_tab.record_run(None, None, [{"id": "../x", "time": "now"}, *history])[0] == history

    assert history_tab.render(history, "fox")[1] == ids
    assert history_tab.render(history, "zebra") == ([], [])
    select = handler(app, "history-gallery", "select")
    assert select(history, ids, gr.SelectData(None, {"index": 1, "value": None})) == (result["images"][1], ids[1])
    updates = by_id(handler(app, "history-restore", "click")(result["images"][1]))
    assert updates["tabs"].selected == "text_to_image" and updates["text_to_image-seed"] == 43

    remaining, _, left_ids, *_ = history_tab.delete(history, ids[0], "")
    assert left_ids == ids[1:] and len(remaining) == 1
    with pytest.raises(gr.Error, match="Select an entry"):
        history_tab.delete(history, None, "")
    assert history_tab.clear_all()[0] == []


def test_history_export_and_import(built, t2i_run, tmp_path):
    app, _ = built
    gallery, result = final(t2i_run[0])
    history = history_tab.record_run(result, gallery_files(app, "text_to_image-gallery", gallery), [])[0]
    exported = history_tab.export(history)
    assert json.loads(Path(exported).read_text(encoding="utf-8"))["entries"][0]["parameters"]["seed"] == 42

    merged, items, ids = history_tab.import_file(exported, [])
    assert [entry["parameters"] for entry in merged] == result["images"] and len(items) == len(ids) == 2
    again = history_tab.import_file(exported, merged)[0]
    assert len(again) == 2, "importing the same entries twice must not duplicate them"

    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "kolors-studio-history", "version": 1, "entries": [{"id": 5}]}')
    with pytest.raises(gr.Error):
        history_tab.import_file(str(broken), history)
    assert all(isinstance(value, type(gr.skip())) for value in history_tab.import_file(None, history))


# --- PNG info ---


def test_png_info_reads_our_files_and_a1111_files(built, t2i_run, tmp_path):
    app, _ = built
    gallery, result = final(t2i_run[0])
    path = gallery_files(app, "text_to_image-gallery", gallery)[1][0]
    parameters, text = parameters_of(path)
    assert parameters == result["images"][1]
    assert "Seed: 43" in text and text.startswith("一只红色的狐狸, a red fox")
    updates = by_id(handler(app, "png-info-restore", "click")(parameters))
    assert updates["tabs"].selected == "text_to_image" and updates["text_to_image-seed"] == 43

    a1111 = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat in a hat\nNegative prompt: ugly\nSteps: 20, Sampler: DPM++ 2M, "
                                "Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 512x768, Model: sdxl")
    gradient((64, 64)).save(a1111, pnginfo=info)
    parameters, text = parameters_of(str(a1111))
    assert {key: parameters[key] for key in ("prompt", "negative_prompt", "num_inference_steps", "scheduler",
                                             "guidance_scale", "seed", "width", "height")} == {
        "prompt": "a cat in a hat", "negative_prompt": "ugly", "num_inference_steps": 20,
        "scheduler": "DPM++ 2M Karras", "guidance_scale": 7.0, "seed": 5, "width": 512, "height": 768}
    assert text.startswith("a cat in a hat")

    plain = tmp_path / "plain.png"
    gradient((64, 64)).save(plain)
    assert parameters_of(str(plain)) == (None, "")
    assert parameters_of(None) == (None, "")
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    with pytest.raises(gr.Error):
        parameters_of(str(not_image))
