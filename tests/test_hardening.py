"""The running app holds under hostile input, load and faults, keeps visitors apart and loses nothing.

Everything here goes through HTTP to the app on loopback with the tiny model: `live_app` (a `python app.py`
process) for what strangers send, an in-process server (`served`) where a fault must be injected into the
pipeline, and app processes killed with SIGKILL for the outputs folder. `Raw` speaks gradio's protocol
directly, to send what gradio_client never would.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import random
import re
import signal
import struct
import threading
import time
import uuid
import weakref
import zlib
from pathlib import Path

import httpx
import pytest
import torch
from diffusers import KolorsPipeline
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from PIL import Image

from kolors_app import generation
from kolors_app.history import OutputStore, make_thumbnail
from kolors_app.metadata import read_parameters

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red fox in the snow"
# prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed, num_images
SMALL = [PROMPT, "", 256, 256, 2, 5.0, "Euler", 1, 1]
FIELDS = ["prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale", "scheduler",
          "seed", "num_images"]
# Two or more path segments: a local path or a URL; "width/height" is not one.
PATH_LIKE = re.compile(r"(?:/[\w.\-]+){2,}")
TRACEBACK_MARKS = ("Traceback", 'File "', "line ")


def small(**changes) -> list:
    """The small text-to-image arguments with some fields changed."""
    values = dict(zip(FIELDS, SMALL))
    values.update(changes)
    return [values[name] for name in FIELDS]


def assert_short_public_message(message: str) -> None:
    """What a visitor may see of a failure: short, no traceback, no local path."""
    assert message and len(message) < 400, message
    assert not PATH_LIKE.search(message), message
    assert not any(mark in message for mark in TRACEBACK_MARKS), message


class Raw:
    """Gradio's HTTP protocol by hand: queue join + SSE stream, direct calls, files."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        config = httpx.get(f"{self.url}/config", timeout=30).json()
        self.fn = {dep["api_name"]: dep["id"] for dep in config["dependencies"] if dep.get("api_name")}
        # The Python event of each generate event's Stop button: the one sharing its trigger with the cancel.
        triggers = {json.dumps(dep["targets"]): dep for dep in config["dependencies"] if dep.get("backend_fn")}
        self.stop_of = {name: triggers[json.dumps(dep["targets"])]["api_name"]
                        for dep in config["dependencies"] for name, fn in self.fn.items()
                        if fn in (dep.get("cancels") or [])}

    def join(self, api_name: str, data: list | str, session: str, timeout: float = 60) -> httpx.Response:
        """Queue an event; `data` as a string is sent as written (NaN is not JSON)."""
        if isinstance(data, str):
            content = f'{{"data": {data}, "fn_index": {self.fn[api_name]}, "session_hash": "{session}"}}'
            return httpx.post(f"{self.url}/gradio_api/queue/join", content=content, timeout=timeout,
                              headers={"content-type": "application/json"})
        return httpx.post(f"{self.url}/gradio_api/queue/join", timeout=timeout,
                          json={"data": data, "fn_index": self.fn[api_name], "session_hash": session})

    def follow(self, session: str, joined: httpx.Response, timeout: float = 60) -> dict:
        """The process_completed message of a joined event, or {"http": status} when the join was refused."""
        if joined.status_code != 200:
            return {"http": joined.status_code, "detail": joined.text}
        with httpx.stream("GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": session},
                          timeout=timeout) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        return message
        raise AssertionError("the stream ended without a result")

    def queued(self, api_name: str, data: list | str, timeout: float = 60) -> dict:
        """Run a queued event to its end, as a new visitor."""
        session = uuid.uuid4().hex[:12]
        return self.follow(session, self.join(api_name, data, session, timeout), timeout)

    def error_of(self, api_name: str, data: list | str) -> str | None:
        """The error text a queued call answers with (None when gradio hides it); fails if it succeeded."""
        message = self.queued(api_name, data)
        assert "http" not in message and message["success"] is False, message
        return message["output"].get("error")

    def direct(self, api_name: str, data: list, session: str | None = None) -> httpx.Response:
        """Call a queue=False event the way the page does (they are all private, but callable)."""
        body = {"data": data, "fn_index": self.fn[api_name], "session_hash": session or uuid.uuid4().hex[:12]}
        return httpx.post(f"{self.url}/gradio_api/run/predict", json=body, timeout=60)

    def upload(self, name: str, data: bytes) -> dict:
        """Upload bytes like the page does; the FileData payload naming the server's copy."""
        answer = httpx.post(f"{self.url}/gradio_api/upload", files={"files": (name, data)}, timeout=60)
        answer.raise_for_status()
        return {"path": answer.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def start_app(request, tiny_dir, tmp_path_factory):
    """conftest.start_app with its first two arguments; looked up through pytest, since tests/browser has a
    conftest.py too and `import conftest` would find whichever was imported last."""
    path = str(Path(__file__).with_name("conftest.py"))
    conftest = next(plugin for plugin in request.config.pluginmanager.get_plugins()
                    if getattr(plugin, "__file__", None) == path)
    return lambda *flags, **options: conftest.start_app(tiny_dir, tmp_path_factory, *flags, **options)


def stop_process(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except Exception:
        process.kill()


@pytest.fixture(scope="module")
def client(live_app):
    return Client(live_app, verbose=False)


@pytest.fixture(scope="module")
def raw(live_app):
    return Raw(live_app)


@dataclasses.dataclass
class Served:
    url: str
    app: object
    ctx: object
    folder: Path


@pytest.fixture(scope="module")
def served(settings, manager, tmp_path_factory):
    """The production launch() in this process on the shared tiny manager, so that tests can patch the pipeline."""
    from kolors_app.server import launch

    folder = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        patch.setenv("XDG_CONFIG_HOME", str(folder / "config"))
        app_settings = dataclasses.replace(settings, port=_free_port(), outputs_dir=folder / "outputs",
                                           save_outputs=True)
        app, ctx = launch(app_settings, manager, prevent_thread_lock=True, quiet=True)
        try:
            yield Served(f"http://127.0.0.1:{app_settings.port}/", app, ctx, folder)
        finally:
            app.close()


# --- Faults: an error inside the pipeline, CUDA out of memory, Stop, a visitor who leaves ---


def fail_first_calls(monkeypatch, error_factory, count: int = 1) -> list:
    """Make KolorsPipeline's next `count` calls raise; returns weak references to memory each failed call held."""
    original = KolorsPipeline.__call__
    held = []

    def failing(self, *args, **kwargs):
        if len(held) < count:
            block = torch.ones(4_000_000)  # 16 MB the failed run holds when it raises
            held.append(weakref.ref(block))
            raise error_factory()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(KolorsPipeline, "__call__", failing)
    return held


def count_calls(monkeypatch, target, name: str) -> list:
    calls = []
    original = getattr(target, name)

    def counted(*args, **kwargs):
        calls.append(time.monotonic())
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, counted)
    return calls


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def test_error_inside_the_pipeline_is_short_frees_memory_and_the_next_run_works(served, monkeypatch):
    secret_path = Path(__file__).resolve()
    held = fail_first_calls(monkeypatch, lambda: RuntimeError(
        f'boom\nTraceback (most recent call last):\n  File "{secret_path}", line 1, in <module>'))
    released = count_calls(monkeypatch, served.ctx.manager, "release_memory")
    client = Client(served.url, verbose=False)
    with pytest.raises(AppError) as caught:
        client.predict(*SMALL, api_name="/text_to_image")
    message = str(caught.value)
    assert_short_public_message(message)
    assert "boom" not in message and "RuntimeError" in message
    assert released, "release_memory was not called after the failure"
    assert wait_until(lambda: held[0]() is None, timeout=5), "the failed run's tensors are still alive"
    gallery, summary = client.predict(*small(seed=7), api_name="/text_to_image")
    assert summary["images"][0]["seed"] == 7 and Path(gallery[0]["image"]).is_file()


def test_cuda_out_of_memory_is_short_frees_memory_and_the_next_run_works(served, monkeypatch):
    held = fail_first_calls(monkeypatch, lambda: torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 23.55 GiB of which "
        "1.2 GiB is free. Process 4242 has 22.3 GiB memory in use. See /usr/lib/python3/dist-packages/torch"))
    released = count_calls(monkeypatch, served.ctx.manager, "release_memory")
    client = Client(served.url, verbose=False)
    try:
        _gallery, summary = client.predict(*SMALL, api_name="/text_to_image")
    except AppError as error:  # no smaller memory plan to step down to (the CPU has one)
        assert_short_public_message(str(error))
    else:  # stepped down to a smaller plan and ran: the visitor is told which
        assert any("plan" in warning for warning in summary["warnings"]), summary
        for warning in summary["warnings"]:
            assert_short_public_message(warning)
    assert released, "release_memory was not called after running out of memory"
    assert wait_until(lambda: held[0]() is None, timeout=5), "the failed run's tensors are still alive"
    _gallery, summary = client.predict(*small(seed=8), api_name="/text_to_image")
    assert summary["images"][0]["seed"] == 8


def timed_steps(monkeypatch) -> list:
    """Record when each denoising step of any run ends."""
    ends = []
    original = generation._step_callback

    def timed(control):
        inner = original(control)

        def on_step_end(pipe, step, timestep, tensors):
            ends.append(time.monotonic())
            return inner(pipe, step, timestep, tensors)

        return on_step_end

    monkeypatch.setattr(generation, "_step_callback", timed)
    return ends


def timed_stop_flags(monkeypatch, ctx) -> list:
    """Record when each run's stop flag is set."""
    set_at = []
    original = ctx.runs.start

    def start(session):
        flag = original(session)
        plain_set = flag.set

        def timed_set():
            set_at.append(time.monotonic())
            plain_set()

        flag.set = timed_set
        return flag

    monkeypatch.setattr(ctx.runs, "start", start)
    return set_at


def assert_stops_within_a_step(ends: list, set_at: list, lock, asked: float) -> None:
    assert wait_until(lambda: not lock.locked(), timeout=30), "the worker still runs 30 s after Stop"
    freed = time.monotonic()
    step = (ends[2] - ends[0]) / 2
    after = [end for end in ends if end > set_at[0]]
    print(f"stop: one step {step:.2f} s; flag set {set_at[0] - asked:.2f} s after asking; worker free "
          f"{freed - set_at[0]:.2f} s after the flag; {len(after)} step end(s) after it")
    assert set_at[0] - asked < 3, "gradio took over 3 s to close the cancelled run"
    # The step in progress ends, its callback sees the flag and ends the run: no further step starts.
    assert len(after) <= 1 and freed - set_at[0] < step + 1.0, (step, after)


def test_stop_button_frees_the_worker_within_a_step(served, monkeypatch):
    ends, set_at = timed_steps(monkeypatch), timed_stop_flags(monkeypatch, served.ctx)
    raw = Raw(served.url)
    session = uuid.uuid4().hex[:12]
    result = {}
    reader = threading.Thread(target=lambda: result.update(raw.follow(session, raw.join(
        "text_to_image", small(num_inference_steps=150), session))))
    reader.start()
    assert wait_until(lambda: len(ends) >= 3, timeout=60), "the run did not start"
    asked = time.monotonic()
    stop = raw.direct(raw.stop_of["text_to_image"], [], session)  # what the page's Stop button sends first
    assert stop.status_code == 200, stop.text
    assert_stops_within_a_step(ends, set_at, served.ctx.manager.run_lock, asked)
    reader.join(30)
    assert result["success"] and result["output"]["data"][1]["stopped"] is True, result


def test_cancelled_api_job_frees_the_worker_within_a_step(served, monkeypatch):
    ends, set_at = timed_steps(monkeypatch), timed_stop_flags(monkeypatch, served.ctx)
    client = Client(served.url, verbose=False)
    job = client.submit(*small(num_inference_steps=150), api_name="/text_to_image")
    assert wait_until(lambda: len(ends) >= 3, timeout=60), "the run did not start"
    asked = time.monotonic()
    job.cancel()  # an API client has no Stop button: gradio closes the run, which sets the flag
    assert wait_until(lambda: set_at, timeout=10), "closing the cancelled run did not set its stop flag"
    assert_stops_within_a_step(ends, set_at, served.ctx.manager.run_lock, asked)
    _gallery, summary = client.predict(*small(seed=9), api_name="/text_to_image")
    assert summary["images"][0]["seed"] == 9


def test_a_visitor_who_leaves_the_queue_never_gets_a_run(served, monkeypatch):
    from kolors_app.ui import runner

    prompts = []
    original = runner.generate

    def recording(manager, request, control=None):
        prompts.append(request.prompt)
        return original(manager, request, control)

    monkeypatch.setattr(runner, "generate", recording)
    client = Client(served.url, verbose=False)
    busy = client.submit(*small(prompt="keeps the worker busy", width=512, height=512, num_inference_steps=150),
                         api_name="/text_to_image")
    assert wait_until(lambda: prompts, timeout=60), "the first run did not start"
    raw = Raw(served.url)
    session = uuid.uuid4().hex[:12]
    joined = httpx.post(f"{raw.url}/gradio_api/queue/join", timeout=30, json={
        "data": small(prompt="left the queue"), "fn_index": raw.fn["text_to_image"], "session_hash": session})
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", f"{raw.url}/gradio_api/queue/data", params={"session_hash": session},
                      timeout=30) as stream:
        first = next(line for line in stream.iter_lines() if line.startswith("data:"))
        assert json.loads(first[5:])["msg"] == "estimation"  # waiting in the queue; now the tab is closed
    queue = served.app._queue
    assert wait_until(lambda: len(queue) == 0, timeout=30), "the queue still holds the visitor who left"
    busy.cancel()
    assert wait_until(lambda: not served.ctx.manager.run_lock.locked(), timeout=30)
    _gallery, summary = client.predict(*small(seed=10), api_name="/text_to_image")
    assert summary["images"][0]["seed"] == 10
    assert "left the queue" not in prompts, prompts


# --- Bad input: each refused with an error naming the field, and the server goes on serving ---

BAD_VALUES = [
    ("width", 255), ("width", 0), ("width", -8), ("width", 100000), ("width", 260), ("width", "256"),
    ("height", 0), ("height", -256), ("height", 100000), ("height", 257),
    ("num_inference_steps", 0), ("num_inference_steps", -1), ("num_inference_steps", 30.5),
    ("num_inference_steps", 10**9), ("num_inference_steps", None),
    ("guidance_scale", -0.5), ("guidance_scale", 30.5), ("guidance_scale", "high"),
    ("seed", -2), ("seed", 2**64), ("seed", "text"), ("seed", 1.5),
    ("num_images", 0), ("num_images", 1000),
    ("prompt", "x" * 200_000), ("prompt", "   "), ("prompt", ["a", "list"]), ("negative_prompt", "x" * 200_000),
    ("scheduler", "Euler; rm -rf /"), ("scheduler", "<b>Euler</b>"), ("scheduler", None),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=[f"{f}={str(v)[:12]}" for f, v in BAD_VALUES])
def test_bad_values_are_refused_naming_the_field(client, field, value):
    with pytest.raises(AppError) as caught:
        client.predict(*small(**{field: value}), api_name="/text_to_image")
    assert str(caught.value).startswith(f"{field}:"), str(caught.value)
    assert len(str(caught.value)) < 400


def test_numbers_that_json_cannot_hold_are_refused(raw):
    for text in ("NaN", "Infinity", "-Infinity", "1e400"):
        data = json.dumps(small()).replace("5.0", text, 1)
        assert raw.error_of("text_to_image", data).startswith("guidance_scale:")


@pytest.mark.parametrize(("field", "value"), [("strength", 0), ("strength", 1.5), ("strength", "all")])
def test_bad_strength_is_refused(client, tmp_path, field, value):
    image = tmp_path / "init.png"
    Image.new("RGB", (64, 64), "blue").save(image)
    with pytest.raises(AppError, match=f"^{field}:"):
        client.predict(*SMALL, handle_file(str(image)), value, api_name="/image_to_image")


def test_bad_ip_adapter_scale_and_missing_reference_are_refused(client, tmp_path):
    image = tmp_path / "reference.png"
    Image.new("RGB", (64, 64), "green").save(image)
    with pytest.raises(AppError, match="^ip_adapter_scale:"):
        client.predict(*SMALL, handle_file(str(image)), 2.5, None, 0.7, api_name="/ip_adapter")
    with pytest.raises(AppError, match="^ip_adapter_image:"):
        client.predict(*SMALL, None, 0.5, None, 0.7, api_name="/ip_adapter")


def png_bomb(width: int, height: int) -> bytes:
    """A valid grey PNG of width x height that compresses to almost nothing."""
    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def exif_rotated() -> bytes:
    image = Image.new("RGB", (64, 32), "blue")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    return encoded(image, "JPEG", exif=exif)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), (80 * i, 0, 0)) for i in range(3)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])


RED = Image.new("RGB", (64, 48), (200, 30, 30))
# name -> file bytes that image inputs must refuse, and the words their error must hold
REFUSED_IMAGES = {
    "truncated.jpg": (lambda: encoded(RED, "JPEG")[:300], "damaged"),
    "text.png": (lambda: b"just some text, renamed to .png\n" * 20, "not an image"),
    "drawing.svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "not an image"),
    "page.html": (lambda: b"<html><body><script>alert(1)</script></body></html>", "not an image"),
    "bomb-400mp.png": (lambda: png_bomb(20000, 20000), "pixels"),
    "bomb-100mp.png": (lambda: png_bomb(10000, 10000), "pixels"),
}
# name -> file bytes of unusual but valid images, which must work
ACCEPTED_IMAGES = {
    "cmyk.jpg": lambda: encoded(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG"),
    "16-bit.png": lambda: encoded(Image.new("I;16", (64, 48), 40000), "PNG"),
    "palette.png": lambda: encoded(RED.convert("P"), "PNG"),
    "transparent.png": lambda: encoded(Image.new("RGBA", (64, 48), (0, 0, 0, 0)), "PNG"),
    "exif-rotated.jpg": exif_rotated,
    "animated.gif": animated_gif,
    "png-named.gif": lambda: encoded(RED, "PNG"),
}


@pytest.mark.parametrize("name", REFUSED_IMAGES)
def test_hostile_image_files_are_refused_quickly(client, tmp_path, name):
    make, words = REFUSED_IMAGES[name]
    path = tmp_path / name
    path.write_bytes(make())
    started = time.monotonic()
    with pytest.raises(AppError) as caught:
        client.predict(*SMALL, handle_file(str(path)), 0.7, api_name="/image_to_image")
    assert str(caught.value).startswith("image:") and words in str(caught.value), str(caught.value)
    assert time.monotonic() - started < 10  # refused from the header: nothing was decoded


@pytest.mark.parametrize("name", ACCEPTED_IMAGES)
def test_unusual_valid_images_work(client, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(ACCEPTED_IMAGES[name]())
    gallery, summary = client.predict(*SMALL, handle_file(str(path)), 0.7, api_name="/image_to_image")
    assert summary["images"][0]["mode"] == "image_to_image"
    with Image.open(gallery[0]["image"]) as result:
        assert result.size == (256, 256)


def test_the_reference_image_field_is_named_too(client, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(10000, 10000))
    with pytest.raises(AppError, match="^ip_adapter_image:.*pixels"):
        client.predict(*SMALL, handle_file(str(path)), 0.5, None, 0.7, api_name="/ip_adapter")


def test_data_urls_are_size_checked_before_decoding(raw):
    # gradio_client and the page always upload; a data: URL reaches the app only from a hand-made request,
    # and gradio checks no size for it.
    huge = "data:image/png;base64," + base64.b64encode(b"\0" * (21 * 1024 * 1024)).decode()
    svg = "data:image/svg+xml;base64," + base64.b64encode(b"<svg><script>alert(1)</script></svg>").decode()
    cases = [(huge, "MB"), (svg, "SVG"), ("data:text/html,<script>alert(1)</script>", "data:image/"),
             ("data:image/png;base64,not base64!", "base64")]
    for url, words in cases:
        error = raw.error_of("image_to_image", [*SMALL, {"path": None, "url": url}, 0.7])
        assert error.startswith("image:") and words in error, error
    small_png = "data:image/png;base64," + base64.b64encode(encoded(RED, "PNG")).decode()
    done = raw.queued("image_to_image", [*SMALL, {"path": None, "url": small_png}, 0.7])
    assert done["success"], done


def test_uploads_over_the_byte_limit_are_refused(raw, client):
    answer = httpx.post(f"{raw.url}/gradio_api/upload", timeout=60,
                        files={"files": ("big.png", b"\0" * (20 * 1024 * 1024 + 1))})
    assert answer.status_code == 413
    assert client.predict(*small(seed=11), api_name="/text_to_image")[1]["images"][0]["seed"] == 11


def test_paths_and_urls_instead_of_uploads_never_reach_a_file(raw, live_app, client):
    port = httpx.URL(live_app).port
    upload_dir = Path(raw.upload("x.png", encoded(RED, "PNG"))["path"]).parent.parent
    # Without gradio's file marker the value passes gradio untouched: the app refuses it, naming the field.
    for path, words in [("/etc/passwd", "outside"), (str(ROOT / "app.py"), "outside"),
                        (f"{upload_dir}/../../../../etc/hostname", "outside"),
                        (f"http://127.0.0.1:{port}/config", "URL"), ("http://169.254.169.254/latest/", "URL"),
                        ("file:///etc/passwd", "URL")]:
        error = raw.error_of("image_to_image", [*SMALL, {"path": path}, 0.7])
        assert error.startswith("image:") and words in error, (path, error)
    # With the marker, gradio itself refuses paths it did not receive as uploads, and URLs of private,
    # loopback and link-local hosts (its SSRF guard), before the app sees them: an error without details.
    marker = {"_type": "gradio.FileData"}
    for path in ["/etc/passwd", str(ROOT / "app.py"), f"http://127.0.0.1:{port}/config",
                 f"http://localhost:{port}/config", "http://[::1]/x.png", "http://10.0.0.1/x.png",
                 "http://169.254.169.254/latest/meta-data/"]:
        message = raw.queued("image_to_image", [*SMALL, {"path": path, "meta": marker}, 0.7])
        assert message["success"] is False, (path, message)
        assert message["output"].get("error") is None, (path, message)
    assert client.predict(*small(seed=12), api_name="/text_to_image")[1]["images"][0]["seed"] == 12


# --- The file routes serve the app's own temporary and output files, nothing else ---


def test_file_routes_serve_only_the_apps_files(served, live_app):
    raw = Raw(served.url)
    done = raw.queued("text_to_image", small(seed=14))
    made = done["output"]["data"][0][0]["image"]["url"]
    assert httpx.get(made, timeout=30).headers["content-type"] == "image/png"  # what the app made: served
    saved = OutputStore(served.ctx.settings.outputs_dir).list_recent(1)[0]["path"]  # saved server-side (local)
    secret = served.folder / "config" / "kolors-studio" / "history-secret"
    assert secret.is_file()
    refused = ["/etc/passwd", "/etc/hostname", str(ROOT / "app.py"), "app.py", "kolors_app/server.py",
               "../../../../etc/passwd", "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", str(saved), str(secret),
               f"{served.folder}/gradio/../config/kolors-studio/history-secret",
               f"http://127.0.0.1:{httpx.URL(live_app).port}/config", "https://huggingface.co/robots.txt",
               "HTTP://example.com/x.png", "file:///etc/passwd"]
    for target in refused:
        for route in ("/gradio_api/file=", "/gradio_api/file/"):
            answer = raw.get(route + target)
            assert answer.status_code in (403, 404), (route + target, answer.status_code)
    assert raw.get("/gradio_api/file=https://huggingface.co/").text == "Remote files are not served."
    for target in ("/gradio_api/proxy=http://127.0.0.1:1/x", "/gradio_api/runs", "/monitoring",
                   "/gradio_api/monitoring"):
        assert raw.get(target).status_code >= 400, target


def test_upload_names_cannot_place_files_outside_the_upload_folder(raw):
    payload = raw.upload("../../../../tmp/escaped.png", encoded(RED, "PNG"))
    upload_dir = Path(raw.upload("plain.png", encoded(RED, "PNG"))["path"]).parent.parent
    assert Path(payload["path"]).resolve().is_relative_to(upload_dir.resolve())
    assert not Path("/tmp/escaped.png").exists()


# --- Load: 16 visitors at once, 3 requests each, through the queue ---


def test_sixteen_visitors_at_once_each_get_their_own_answer_or_queue_full(live_app, capsys):
    """Sixteen API clients at once: each answer (JSON and PNG file) is its own request's, or "queue full"."""
    visitors, requests_each, bound = 16, 3, 150.0
    barrier = threading.Barrier(visitors)
    finished: dict[tuple, float] = {}
    outcomes: list[tuple] = []  # (visitor, request, "done" | "full", seconds)
    failures: list[str] = []
    began = time.monotonic()

    def visit(visitor: int) -> None:
        try:
            client = Client(live_app, verbose=False)
            barrier.wait(timeout=60)
            jobs = []
            for number in range(requests_each):  # all three at once, like a visitor clicking three times
                key, seed, prompt = (visitor, number), 1000 + 10 * visitor + number, f"visitor {visitor} #{number}"
                sent = time.monotonic()
                job = client.submit(*small(prompt=prompt, seed=seed), api_name="/text_to_image")
                job.future.add_done_callback(lambda _future, key=key: finished.setdefault(key, time.monotonic()))
                jobs.append((key, seed, prompt, sent, job))
            for key, seed, prompt, sent, job in jobs:
                try:
                    gallery, summary = job.result(timeout=max(1.0, began + bound - time.monotonic()))
                except QueueError as error:
                    assert "Queue is full" in str(error), str(error)
                    outcomes.append((*key, "full", 0.0))
                    continue
                image = summary["images"][0]
                assert (image["prompt"], image["seed"]) == (prompt, seed), (key, image)
                assert gallery[0]["caption"] == f"seed {seed}"
                stored = read_parameters(gallery[0]["image"])  # the PNG this visitor got is their own
                assert (stored["prompt"], stored["seed"]) == (prompt, seed), (key, stored)
                outcomes.append((*key, "done", finished[key] - sent))
        except Exception as error:  # collected: an assert in a thread would not fail the test
            failures.append(f"visitor {visitor}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=visit, args=(visitor,)) for visitor in range(visitors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, began + bound + 30 - time.monotonic()))
    wall = time.monotonic() - began
    assert not failures, failures
    assert len(outcomes) == visitors * requests_each and wall < bound + 30, (len(outcomes), wall)
    latencies = sorted(seconds for *_key, kind, seconds in outcomes if kind == "done")
    full = sum(kind == "full" for *_key, kind, _seconds in outcomes)
    p50, p95 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
    with capsys.disabled():
        print(f"\nload: {visitors} visitors x {requests_each} requests at once (256 px, 2 steps): "
              f"{len(latencies)} completed, {full} answered 'queue full'; "
              f"latency p50 {p50:.1f} s, p95 {p95:.1f} s; all answered in {wall:.1f} s")
    assert len(latencies) >= visitors
    assert Client(live_app, verbose=False).predict(*small(seed=15), api_name="/text_to_image")[1]["images"]


# --- Files: an app process killed mid-write leaves every file readable and the index consistent ---


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
    from kolors_app.server import launch

    monkeypatch.setenv("SPACE_ID", "someone/kolors-studio")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    outputs = tmp_path / "outputs"
    app, ctx = launch(dataclasses.replace(settings, port=_free_port(), outputs_dir=outputs, save_outputs=None),
                      manager, prevent_thread_lock=True, quiet=True)
    try:
        assert ctx.outputs is None
        gallery, _summary = Client(f"http://127.0.0.1:{ctx.settings.port}/", verbose=False).predict(
            *SMALL, api_name="/text_to_image")
        assert Path(gallery[0]["image"]).is_file() and not outputs.exists()
    finally:
        app.close()


# --- Visitors: nothing of one visitor reaches another; the history a browser sends is checked and capped ---

HOSTILE_TEXT = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def history_entry(number: int, **changes) -> dict:
    entry = {"id": f"entry-{number}", "time": 1_700_000_000 + number, "seeds": [number],
             "parameters": {"mode": "text_to_image", "prompt": f"entry {number}", "seed": number},
             "thumbnail": make_thumbnail(Image.new("RGB", (8, 8), "red"))}
    entry.update(changes)
    return entry


def gallery_of(answer: httpx.Response) -> list:
    assert answer.status_code == 200, answer.text
    return answer.json()["data"][0]


def test_history_sent_back_by_a_browser_is_validated_and_capped(raw):
    bomb = "data:image/png;base64," + base64.b64encode(png_bomb(6000, 6000)).decode()  # 36 MP in 47 kB
    hostile = [history_entry(1, id=HOSTILE_TEXT), history_entry(2, thumbnail=bomb), history_entry(3, time="now"),
               history_entry(4, parameters={"prompt": "x" * 6000}), history_entry(5, seeds=[-1]), "junk", None,
               history_entry(6, thumbnail="javascript:alert(1)"), {"id": "no-time"}]
    started = time.monotonic()
    assert gallery_of(raw.direct("render", [hostile, ""])) == []
    shown = gallery_of(raw.direct("render", [[history_entry(n) for n in range(300)] + hostile, ""]))
    assert len(shown) == 200  # the cap; the hostile entries come after it
    many_bombs = [history_entry(n, thumbnail=bomb) for n in range(200)]
    assert gallery_of(raw.direct("render", [many_bombs, ""])) == []
    assert time.monotonic() - started < 20
    assert raw.direct("render", ["not a list", ""]).status_code == 200


def test_gallery_files_sent_back_are_checked_before_decoding(raw):
    bomb = raw.upload("bomb.png", png_bomb(10000, 10000))
    parameters = {"mode": "text_to_image", "prompt": "x", "seed": 1, "width": 256, "height": 256}
    answer = raw.direct("record_run", [{"images": [parameters]}, [{"image": bomb, "caption": None}], []])
    assert answer.status_code == 500 and answer.json()["error"].startswith("gallery:"), answer.text
    image = raw.upload("fine.png", encoded(RED, "PNG"))
    answer = raw.direct("record_run", [{"images": [parameters]}, [{"image": image, "caption": None}],
                                       [history_entry(n) for n in range(1000)]])
    assert answer.status_code == 200, answer.text
    history = answer.json()["data"][0]
    assert len(history) == 200 and history[0]["parameters"]["prompt"] == "x"


def test_one_visitors_stop_does_not_stop_another(served):
    raw = Raw(served.url)
    runner_session, other_session = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    result = {}
    reader = threading.Thread(target=lambda: result.update(raw.follow(runner_session, raw.join(
        "text_to_image", small(prompt="mine", num_inference_steps=30), runner_session))))
    reader.start()
    assert wait_until(lambda: served.ctx.manager.run_lock.locked(), timeout=60)
    assert raw.direct(raw.stop_of["text_to_image"], [], other_session).status_code == 200
    reader.join(60)
    assert result["success"] and result["output"]["data"][1]["images"][0]["prompt"] == "mine", result


def test_html_in_prompts_is_kept_as_plain_data(client, raw):
    gallery, summary = client.predict(*small(prompt=HOSTILE_TEXT, negative_prompt=HOSTILE_TEXT),
                                      api_name="/text_to_image")
    assert summary["images"][0]["prompt"] == HOSTILE_TEXT
    assert gallery[0]["caption"] == "seed 1"  # captions never carry the prompt
    stored = read_parameters(gallery[0]["image"])
    assert stored["prompt"] == stored["negative_prompt"] == HOSTILE_TEXT
    shown = gallery_of(raw.direct("render", [[history_entry(1, parameters={"prompt": HOSTILE_TEXT})], ""]))
    assert HOSTILE_TEXT[:60] in shown[0]["caption"]  # as text, for the browser to show as text
