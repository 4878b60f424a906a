"""The UI built but not launched, on the tiny model: controls that need no model run; selecting, restoring, sending."""

import re

import gradio as gr
import pytest
from ui_handlers import ENDPOINTS, by_id, component, final, gallery_files, handler

from kolors_app.core.schedulers import RECOMMENDED, SCHEDULER_NAMES
from kolors_app.ui.controls import ASPECT_PRESETS, CUSTOM, aspect_for, selected_image

def unchanged(updates: dict) -> bool:
    """An answer that leaves every control as it was."""
    return bool(updates) and all(isinstance(value, type(gr.skip())) for value in updates.values())


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
    preset = handler(app, "text_to_image-aspect", "input")
    for name, size in ASPECT_PRESETS.items():
        assert preset(name) == list(size)
        assert aspect_for(*size) == name
        assert size[0] % 64 == 0 and size[1] % 64 == 0 and 0.85e6 < size[0] * size[1] < 1.1e6
    assert all(isinstance(value, type(gr.skip())) for value in preset(CUSTOM))
    # Typing a size picks the matching preset, or Custom; a size that is not a multiple of 8 inside the limits
    # is snapped the way the slider shows it (the toast says so), not left to fail on Generate.
    # Only the box typed into is answered, and only when it must change.
    width, height = handler(app, "text_to_image-width", "input"), handler(app, "text_to_image-height", "input")
    skip = type(gr.skip())
    kept, aspect = width(1344, 768)
    assert isinstance(kept, skip) and aspect == "16:9"
    kept, aspect = height(256, 256)
    assert isinstance(kept, skip) and aspect == CUSTOM
    assert width(1001, 768) == (1000, CUSTOM)
    assert width(5000, 100) == (2048, CUSTOM) and height(5000, 100) == (256, CUSTOM)
    assert width(1151.9, 896) == (1152, "4:3") and height(1152, 895.6) == (896, "4:3")
    for odd in ("", "1e400", float("nan"), None):  # what a hand-made event may send: left as it is
        kept, aspect = width(odd, 768)
        assert isinstance(kept, skip) and isinstance(aspect, skip)


def test_choosing_a_sampler_sets_its_steps_and_guidance_unless_the_user_changed_them(built):
    app, _ = built
    for mode in ENDPOINTS:
        choose = handler(app, f"{mode}-scheduler", "input")
        previous = "Euler"
        for name in SCHEDULER_NAMES:
            assert choose(name, previous, *RECOMMENDED[previous]) == (*RECOMMENDED[name], name)
            previous = name
    choose = handler(app, "text_to_image-scheduler", "input")
    assert choose("DPM++ 2M Karras", "Euler", 50, 5.0) == (25, 6.5, "DPM++ 2M Karras")
    # The user's own 30 steps stay.
    steps, guidance, state = choose("DPM++ 2M Karras", "Euler", 30, 5.0)
    assert isinstance(steps, type(gr.skip())) and isinstance(guidance, type(gr.skip())) and state == "DPM++ 2M Karras"


def test_ip_adapter_defaults_agree_and_its_strength_waits_for_an_init_image(built):
    app, _ = built
    sampler = component(app, "ip_adapter-scheduler").value
    steps, guidance = component(app, "ip_adapter-steps").value, component(app, "ip_adapter-guidance").value
    assert (steps, guidance) == RECOMMENDED[sampler] == (25, 6.5)
    assert component(app, "ip_adapter-strength").interactive is False
    toggle = handler(app, "ip_adapter-image", "change")
    assert toggle({"path": "x.png"}).interactive is True and toggle(None).interactive is False


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
    parameters, index, infotext = select(result, gr.SelectData(None, {"index": 1, "value": None}))
    assert (parameters, index) == (result["images"][1], 1)
    # A1111's infotext paragraph, as in the PNG.
    assert infotext.startswith("一只红色的狐狸, a red fox\nNegative prompt: blurry\nSteps: 5, Sampler: Euler")
    assert "Seed: 43" in infotext
    assert select(result, gr.SelectData(None, {"index": 9, "value": None}))[:2] == (result["images"][0], 0)
    assert select(None, gr.SelectData(None, {"index": 0, "value": None})) == (None, 0, "")


def test_use_these_settings_restores_the_image_on_screen_and_keeps_the_batch_size(built, t2i_run):
    app, _ = built
    _, result = final(t2i_run[0])
    restore = handler(app, "text_to_image-use-settings", "click")
    updates = by_id(restore(result, 1))
    assert updates["tabs"].selected == "text_to_image"
    assert {key: updates[f"text_to_image-{key}"] for key in ("prompt", "negative", "seed", "steps", "width")} == {
        "prompt": "一只红色的狐狸, a red fox", "negative": "blurry", "seed": 43, "steps": 5, "width": 256}
    assert updates["text_to_image-aspect"] == CUSTOM
    assert "text_to_image-num-images" not in updates  # one image of a batch keeps the batch
    # Right after a run nothing was clicked: the image on screen (the first) counts as selected.
    assert by_id(restore(result, 0))["text_to_image-seed"] == 42

    i2i = {"images": [dict(result["images"][0], mode="image_to_image", strength=0.35, width=1152, height=896)]}
    updates = by_id(restore(i2i, 0))
    assert updates["tabs"].selected == "image_to_image"
    assert updates["image_to_image-strength"] == 0.35 and updates["image_to_image-aspect"] == "4:3"
    assert "text_to_image-prompt" not in updates

    ip = {"images": [dict(result["images"][0], mode="ip_adapter", ip_adapter_scale=1.25, scheduler="DPM++ 2M Karras")]}
    updates = by_id(restore(ip, 0))
    assert updates["tabs"].selected == "ip_adapter"
    assert updates["ip_adapter-scale"] == 1.25 and updates["ip_adapter-scheduler"] == "DPM++ 2M Karras"

    # Nothing on screen or parameters that are not ours: a toast (gr.Warning), and no control changes.
    warnings = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gr, "Warning", lambda message, **_: warnings.append(message))
        assert unchanged(restore(None, 0)) and unchanged(restore({"images": [{"mode": "video", "prompt": "x"}]}, 0))
    assert warnings[0].startswith("Nothing to restore") and "mode" in warnings[1]


def test_restore_keeps_values_inside_what_the_controls_hold(built):
    app, _ = built
    restore = handler(app, "png-info-restore", "click")
    updates = by_id(restore({"mode": "text_to_image", "prompt": "x", "num_inference_steps": 2**62, "width": -8,
                             "guidance_scale": 99.0, "scheduler": "Unknown sampler", "seed": 2**40}))
    assert updates["text_to_image-steps"] == 150 and updates["text_to_image-width"] == 256
    assert updates["text_to_image-guidance"] == 30.0 and updates["text_to_image-seed"] == 2**32 - 1
    assert "text_to_image-scheduler" not in updates


def test_send_to_image_to_image_and_ip_adapter_carries_prompt_seed_and_size(built, t2i_run):
    app, _ = built
    gallery, result = final(t2i_run[0])
    files = gallery_files(app, "text_to_image-gallery", gallery)
    assert selected_image(files, 1) == files[1][0]
    assert selected_image(files, 7) == files[0][0] and selected_image([], 0) is None
    updates = by_id(handler(app, "text_to_image-send-i2i", "click")(files, result, 1))
    assert updates["image_to_image-image"] == files[1][0] and updates["tabs"].selected == "image_to_image"
    assert updates["image_to_image-prompt"] == "一只红色的狐狸, a red fox"
    assert updates["image_to_image-negative"] == "blurry" and updates["image_to_image-seed"] == 43
    # The target tab takes the image's own size (256x256), not a size that would crop it.
    assert (updates["image_to_image-width"], updates["image_to_image-height"]) == (256, 256)
    updates = by_id(handler(app, "text_to_image-send-ip", "click")(files, result, 0))
    assert updates["ip_adapter-reference"] == files[0][0] and updates["tabs"].selected == "ip_adapter"
    assert updates["ip_adapter-seed"] == 42
    assert unchanged(handler(app, "text_to_image-send-i2i", "click")([], None, 0))
