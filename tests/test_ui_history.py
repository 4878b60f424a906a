"""The UI built but not launched, on the tiny model: the history kept in the visitor's browser, and PNG info."""

import json
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image, PngImagePlugin
from ui_handlers import by_id, final, gallery_files, gradient, handler

from kolors_app.ui import history_tab
from kolors_app.ui.png_info_tab import parameters_of

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
