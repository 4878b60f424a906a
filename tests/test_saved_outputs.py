"""The outputs folder: an app process killed mid-write leaves every file readable and the index consistent."""

import dataclasses
import json
import random
import signal
import time
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_http import SMALL, free_port, small, stop_process, wait_until
from PIL import Image

from kolors_app.outputs.history import OutputStore
from kolors_app.metadata.png_chunks import read_parameters


def check_outputs(folder: Path) -> list[dict]:
    """Every PNG decodes and carries its parameters; the index points only at readable PNGs."""
    pngs = sorted(folder.rglob("*.png"))
    for path in pngs:
        with Image.open(path) as image:
            image.load()
        assert read_parameters(path)["prompt"]
    lines = (folder / OutputStore.INDEX_NAME).read_bytes().split(b"\n")
    records, torn = [], 0
    for line in filter(None, lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            torn += 1
    assert torn <= 1, f"{torn} torn index lines"
    indexed = {folder / record["path"] for record in records}
    assert all(path.is_file() for path in indexed)
    assert len(set(pngs) - indexed) <= 1  # at most the image being indexed when the process died
    recent = OutputStore(folder).list_recent(1000)
    assert {record["path"] for record in recent} == {path.resolve() for path in indexed}
    return recent


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_app_killed_while_saving_leaves_readable_files_and_a_consistent_index(start_app, tmp_path):
    outputs = tmp_path / "outputs"
    index = outputs / OutputStore.INDEX_NAME
    process, url, _log = start_app("--outputs-dir", str(outputs), "--save-outputs", "true")
    try:
        client = Client(url, verbose=False)
        for number in range(6):
            client.submit(*small(prompt=f"burst {number}", seed=number, num_inference_steps=1, num_images=4),
                          api_name="/text_to_image")
        assert wait_until(lambda: index.exists() and index.read_bytes().count(b"\n") >= 6, timeout=120)
        time.sleep(random.uniform(0, 0.3))  # somewhere in the next image's run or save
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    before = check_outputs(outputs)
    assert len(before) >= 6
    process, url, _log = start_app("--outputs-dir", str(outputs), "--save-outputs", "true")
    try:
        Client(url, verbose=False).predict(*small(prompt="after the kill", seed=77), api_name="/text_to_image")
    finally:
        stop_process(process)
    after = check_outputs(outputs)
    assert after[0]["parameters"]["prompt"] == "after the kill" and len(after) == len(before) + 1


def test_no_server_side_saving_on_a_space(settings, manager, tmp_path, monkeypatch):
    from kolors_app.launch import launch

    monkeypatch.setenv("SPACE_ID", "someone/kolors-studio")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    outputs = tmp_path / "outputs"
    app, ctx = launch(dataclasses.replace(settings, port=free_port(), outputs_dir=outputs, save_outputs=None),
                      manager, prevent_thread_lock=True, quiet=True)
    try:
        assert ctx.outputs is None
        gallery, _summary = Client(f"http://127.0.0.1:{ctx.settings.port}/", verbose=False).predict(
            *SMALL, api_name="/text_to_image")
        assert Path(gallery[0]["image"]).is_file() and not outputs.exists()
    finally:
        app.close()
