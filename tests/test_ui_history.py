"""The UI built but not launched, on the tiny model: the history kept in the visitor's browser, and PNG info."""

import json
import time
import uuid
from pathlib import Path

import gradio as gr
import httpx
import pytest
from image_bytes import RED, encoded
from PIL import PngImagePlugin
from ui_handlers import by_id, final, gallery_files, gradient, handler, upload

from kolors_app.ui.png_info_tab import parameters_of

# --- History (kept in the visitor's browser, IndexedDB; tests/browser checks the page side) ---


def test_the_server_never_takes_the_history(built):
    app, _ = built
    # No browser store sent with every event, and no event that renders, records or imports a history.
    assert not [block for block in app.blocks.values() if isinstance(block, gr.BrowserState)]
    names = {f.name for f in app.fns.values()}
    assert not names & {"record_run", "render", "import_file", "export", "delete", "select"}
    # The gallery goes to the server only to send one image elsewhere, as sent (gradio would check every item).
    # (The page's own script reads the gallery after each run to keep it: no server function runs there.)
    takes_gallery = [f for f in app.fns.values()
                     if f.fn is not None and any(isinstance(block, gr.Gallery) for block in f.inputs)]
    assert {f.name for f in takes_gallery} == {"send"} and not any(f.preprocess for f in takes_gallery)
    assert all(f.queue and f.concurrency_limit == "default" for f in takes_gallery)  # the queue's default: 1


def test_restoring_an_entry_brings_back_its_init_image(built, upload_dir, tmp_path):
    app, _ = built
    restore = handler(app, "history-restore", "click")
    init = upload(upload_dir, gradient(), "init.png")
    parameters = {"mode": "image_to_image", "prompt": "an oil painting", "seed": 21, "width": 256, "height": 256,
                  "num_inference_steps": 4, "strength": 0.5, "scheduler": "Euler"}
    updates = by_id(restore(json.dumps({"parameters": parameters, "image": init})))
    assert updates["tabs"].selected == "image_to_image" and updates["image_to_image-prompt"] == "an oil painting"
    assert updates["image_to_image-image"] == str(Path(init).resolve()) and updates["image_to_image-strength"] == 0.5
    ip = {"mode": "ip_adapter", "prompt": "", "seed": 3, "ip_adapter_scale": 0.8}
    updates = by_id(restore(json.dumps({"parameters": ip, "ip_adapter_image": init})))
    assert updates["ip_adapter-reference"] == str(Path(init).resolve()) and updates["ip_adapter-image"] is None

    warnings = []
    outside = tmp_path / "secret.png"
    gradient().save(outside)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gr, "Warning", lambda message, **_: warnings.append(message))
        for payload in ["", "not json", json.dumps({"parameters": parameters, "image": str(outside)}),
                        json.dumps({"parameters": {"mode": "video"}}), "x" * 10_000_000]:
            assert all(isinstance(value, type(gr.skip())) for value in restore(payload).values())
    assert warnings[0].startswith("Nothing to restore")
    assert [message.split(":")[0] for message in warnings[1:]] == [
        "history entry", "history entry.image", "history entry.parameters.mode", "history entry"]


def events_of(raw, api_name: str, data: list) -> tuple[list, float]:
    """Every message the page gets for a queued event, and the seconds from sending to the end."""
    session = uuid.uuid4().hex[:12]
    started = time.monotonic()
    joined = raw.join(api_name, data, session)
    if joined.status_code != 200:
        return [{"http": joined.status_code}], time.monotonic() - started
    messages = []
    with httpx.stream("GET", f"{raw.url}/gradio_api/queue/data", params={"session_hash": session},
                      timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                if messages[-1].get("msg") == "process_completed":
                    break
    return messages, time.monotonic() - started


def test_crafted_requests_to_the_history_and_gallery_events_cost_nothing(raw):
    """Issue 10: a 3000-item gallery or a 9.6 MB history payload, answered at once with a named message."""
    uploaded = raw.upload("fine.png", encoded(RED, "PNG"))
    gallery = [{"image": uploaded, "caption": None}] * 3000
    result = {"images": [{"mode": "text_to_image", "prompt": "x", "seed": n, "width": 256, "height": 256}
                         for n in range(3000)]}
    for name in [n for n in raw.fn if n.startswith("send")]:
        messages, seconds = events_of(raw, name, [gallery, result, 2999])
        # Nothing decoded; gradio's own check of each item's path is the cost (about 3 ms an item on 2 busy cores),
        # and the event is queued, one at a time (test_the_server_never_takes_the_history).
        assert seconds < 30, (name, seconds)
        assert messages[-1]["success"], messages
        assert any(m.get("msg") == "log" and m["log"].startswith("Sent to") for m in messages), messages
    payload = json.dumps({"parameters": {"mode": "text_to_image", "prompt": "x"}, "pad": "x" * 9_600_000})
    messages, seconds = events_of(raw, "restore_entry", [payload])
    assert seconds < 5
    assert messages[0].get("http") == 413 or any(
        m.get("msg") == "log" and m["log"].startswith("history entry: must be at most") for m in messages), messages


# --- PNG info ---


def test_png_info_reads_our_files_and_a1111_files(built, t2i_run, tmp_path):
    app, _ = built
    gallery, result = final(t2i_run[0])
    path = gallery_files(app, "text_to_image-gallery", gallery)[1][0]
    parameters, text = parameters_of(path)
    expanded = ("final_prompt", "final_negative_prompt")  # what ran; the PNG reader leaves these out
    assert parameters == {k: v for k, v in result["images"][1].items() if k not in expanded or k in parameters}
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
    warnings = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gr, "Warning", lambda message, **_: warnings.append(message))
        assert parameters_of(str(not_image)) == (None, "")  # a toast, not a red error on the outputs
    assert warnings and warnings[0].startswith("image")
