"""Faults in the running app: an error inside the pipeline, CUDA out of memory, Stop, a visitor who leaves.

The app is served in this process (`served`), so that a fault can be injected into the pipeline.
"""

import json
import threading
import time
import uuid
import weakref
from pathlib import Path

import httpx
import pytest
import torch
from diffusers import KolorsPipeline
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_http import SMALL, Raw, assert_short_public_message, small, wait_until

from kolors_app.engine import generation


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
    """Record when a job's stop reaches its worker (the flags the step callback checks)."""
    from kolors_app.engine import worker

    set_at = []
    original = worker.StopFlags.stop

    def timed_stop(self):
        set_at.append(time.monotonic())
        original(self)

    monkeypatch.setattr(worker.StopFlags, "stop", timed_stop)
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
    # The stopped run still hands back its last preview (issue 9), which takes a moment after the flag.
    assert len(after) <= 1 and freed - set_at[0] < step + 2.0, (step, after)


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
    from kolors_app.engine import worker

    prompts = []
    original = worker.run_validated

    def recording(manager, request, control=None):
        prompts.append(request.prompt)
        return original(manager, request, control)

    monkeypatch.setattr(worker, "run_validated", recording)
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
