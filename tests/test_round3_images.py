"""Issue 18, finding 2: every path that opens an uploaded image checks its structure first.

gradio's own Image preprocessing opened the file (Pillow reads every TIFF tag then) before the app's guard saw it:
two parallel upload events on one 4 MB TIFF whose 300 tags point at one 4 MB block took 1.8 GB. The server's
peak resident memory is read from /proc (VmHWM, reset through clear_refs) around each entrance.
"""

import threading
import uuid
from pathlib import Path

import gradio as gr
import httpx
import pytest
from attack_files import tiff_exif_bomb
from gradio_http import NO_CONTROL, NO_CREATIVE, SMALL, Raw, assert_short_public_message, stop_process
from image_bytes import RED, encoded

# Stated bound: the image paths add under 300 MB to the server's peak memory.
PEAK_GROWTH_MB = 300
# Components whose preprocessing opens the file (gr.File and a filepath gr.Gallery only pass the path on).
OPENED_BY_GRADIO = (gr.Image, gr.ImageEditor)


def test_no_event_hands_an_image_to_gradios_preprocessing(built):
    app, _ctx = built
    offenders = [f"{fn.api_name or fn.name}: {type(block).__name__} {block.elem_id}"
                 for fn in app.fns.values() if fn.fn is not None and fn.preprocess
                 for block in fn.inputs if isinstance(block, OPENED_BY_GRADIO)
                 or (isinstance(block, gr.Gallery) and block.type != "filepath")]
    assert not offenders, offenders


def status_kb(pid: int, field: str) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def reset_peak(pid: int) -> int:
    """Reset the process's peak resident memory (VmHWM) to what it holds now; returns that, in kB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_kb(pid, "VmRSS:")


def event_of(config: dict, elem_id: str, trigger: str) -> int:
    """The id of the event `trigger` of the component with `elem_id` (events without an api name of their own)."""
    component = next(item["id"] for item in config["components"] if item.get("props", {}).get("elem_id") == elem_id)
    return next(dep["id"] for dep in config["dependencies"] if [component, trigger] in dep["targets"])


def direct(raw: Raw, fn_index: int, data: list) -> httpx.Response:
    body = {"data": data, "fn_index": fn_index, "session_hash": uuid.uuid4().hex[:12]}
    return httpx.post(f"{raw.url}/gradio_api/run/predict", json=body, timeout=60)


@pytest.fixture(scope="module")
def app(start_app):
    process, url, _log = start_app()
    yield process, Raw(url)
    stop_process(process)


def test_a_tiff_tag_bomb_is_checked_before_anything_opens_it(app):
    process, raw = app
    config = httpx.get(f"{raw.url}/config", timeout=30).json()
    unqueued = {"image-to-image upload": event_of(config, "image_to_image-image", "upload"),
                "inpaint upload": event_of(config, "inpaint-image", "upload"),
                "inpaint editor": event_of(config, "inpaint-image", "change"),
                "ip-adapter init": event_of(config, "ip_adapter-image", "change")}
    good = raw.upload("good.png", encoded(RED, "PNG"))
    # 4 MB, 1.2 GB of tag copies in Pillow; named .png as PNG info takes only image names (the bytes decide)
    bomb = raw.upload("bomb.png", tiff_exif_bomb(300, 4_000_000))

    def run_every_path(payload) -> list[str]:
        """Each entrance that opens an uploaded image; the errors the queued ones answer."""
        answers = [None, None]
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, direct(raw, unqueued[
            "image-to-image upload"], [payload]))) for i in range(2)]  # the finding: two in parallel
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answers += [direct(raw, unqueued[name], [payload]) for name in unqueued if name != "image-to-image upload"]
        assert [answer.status_code for answer in answers] == [200] * len(answers), [a.text[:200] for a in answers]
        errors = [raw.queued("upscale_image", [payload, "Lanczos", 1.0])["output"].get("error"),
                  raw.queued("image_to_image", [*SMALL, payload, 0.7, *NO_CONTROL, *NO_CREATIVE[:1]])["output"]
                  .get("error")]
        png_info = raw.queued("parameters_of", [payload])
        assert png_info.get("success"), png_info
        return errors

    run_every_path(good)  # warm: every handler's modules imported before the peak is reset
    before = reset_peak(process.pid)
    errors = run_every_path(bomb)
    growth = (status_kb(process.pid, "VmHWM:") - before) / 1024
    print(f"peak memory over every image path with a TIFF tag bomb: +{growth:.0f} MB")
    assert growth < PEAK_GROWTH_MB
    for error in errors:
        assert error and error.startswith("image:") and "TIFF tags" in error, errors
        assert_short_public_message(error)
