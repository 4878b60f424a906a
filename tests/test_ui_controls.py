"""The UI built but not launched, on the tiny model: controls that need no model run; selecting, restoring, sending."""

import re

import gradio as gr
import pytest
from ui_handlers import ENDPOINTS, by_id, component, final, gallery_files, handler

from kolors_app.schedulers import RECOMMENDED, SCHEDULER_NAMES
from kolors_app.ui.controls import ASPECT_PRESETS, CUSTOM, aspect_for, selected_image

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
