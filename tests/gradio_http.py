"""Talking to the running app over HTTP: the small request, what a visitor may see, and gradio's protocol by hand.

`Raw` speaks gradio's protocol directly, to send what gradio_client never would.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red fox in the snow"
# prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed, num_images
SMALL = [PROMPT, "", 256, 256, 2, 5.0, "Euler", 1, 1]
FIELDS = ["prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale", "scheduler",
          "seed", "num_images"]
# Two or more path segments: a local path or a URL; "width/height" is not one.
PATH_LIKE = re.compile(r"(?:/[\w.\-]+){2,}")
TRACEBACK_MARKS = ("Traceback", 'File "', "line ")


# Three ControlNet units, all off: control_type, control_image, control_preprocess, control_scale, control_start,
# control_end, control_low_threshold, control_high_threshold (and the same with _2, _3). gradio_client fills them
# in itself; a raw request must send them.
NO_CONTROL = ["none", None, True, 0.7, 0.0, 0.9, 100, 200] * 3
# Then the creative accordion's (ui/creative.py): styles, hires_fix, hires_upscaler, hires_upscale, hires_steps,
# hires_denoising_strength, with the hires fix off.
NO_CREATIVE = [[], False, "Latent", 1.5, 0, 0.45]


def small(**changes) -> list:
    """The small text-to-image arguments with some fields changed (the control units off)."""
    values = dict(zip(FIELDS, SMALL))
    values.update(changes)
    return [values[name] for name in FIELDS] + NO_CONTROL + NO_CREATIVE


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
        # The page's Stop button of each generate endpoint (a private event named after it).
        self.stop_of = {name: f"{name}_stop" for name in self.fn if f"{name}_stop" in self.fn}

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except Exception:
        process.kill()


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()
