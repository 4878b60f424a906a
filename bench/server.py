"""Measurements 4-5 through the real server: start-up to HTTP and first image, and the HTTP API's cost."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from kolors_app.engine.generation import generate
from kolors_app.core.request import GenerationRequest

from .common import ROOT, Row, Sample, medians, row, timed
from .core import PROMPT, loaded_manager, tiny_case

APP = ROOT / "app.py"
STEPS, SIZE = 4, 256
START_TIMEOUT = 180.0


def missing_app_reason() -> str | None:
    """Why the server measurements cannot run here, or None when they can."""
    if not APP.is_file():
        return "app.py does not exist yet"
    try:
        import gradio_client  # noqa: F401
    except ImportError:
        return "gradio_client is not installed"
    return None


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers_http(url: str) -> bool:
    """Whether the server answers GET / with 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def running_server(threads: int):
    """Start `python app.py --model tiny` and yield (url, process, start time); stop it afterwards."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tempfile.NamedTemporaryFile("w+", prefix="kolors-bench-server-", suffix=".log", delete=False)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(APP), "--model", "tiny", "--port", str(port),
                                "--save-outputs", "false"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}/", process, started
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def wait_for_http(url: str, process, started: float) -> float:
    """Seconds from process start until the UI answers HTTP."""
    while time.perf_counter() - started < START_TIMEOUT:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before answering")
        if answers_http(url):
            return time.perf_counter() - started
        time.sleep(0.02)
    raise RuntimeError(f"the server did not answer within {START_TIMEOUT:.0f} s")


def api_call(client, seed: int):
    """One text-to-image request through the public HTTP API."""
    return client.predict(prompt=PROMPT, negative_prompt="", width=SIZE, height=SIZE, num_inference_steps=STEPS,
                          guidance_scale=5.0, scheduler="Euler", seed=seed, num_images=1, api_name="/text_to_image")


def process_cpu(process) -> float:
    """CPU seconds a child process has used so far."""
    import psutil

    times = psutil.Process(process.pid).cpu_times()
    return times.user + times.system


def children_cpu() -> float:
    """CPU seconds used by the child processes that have ended so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_startup(threads: int, repeats: int) -> list[Row]:
    """4. Process start -> the UI answers HTTP -> the first tiny image arrives."""
    from gradio_client import Client

    http, image = [], []
    for _ in range(repeats):
        with running_server(threads) as (url, process, started):
            wall = wait_for_http(url, process, started)
            http.append(Sample(wall, process_cpu(process)))
            client_cpu = time.process_time()
            api_call(Client(url, verbose=False), seed=1)
            image.append(Sample(time.perf_counter() - started,
                                process_cpu(process) + time.process_time() - client_cpu))
    before = children_cpu()
    importing = timed(lambda: subprocess.run([sys.executable, "-c", "import app, kolors_app.launch"], cwd=ROOT,
                                             check=True))
    importing.cpu = children_cpu() - before
    http, image = medians(http), medians(image)
    return [
        row("4 start-up", "tiny", "import app (no model work)", importing),
        row("4 start-up", "tiny", "process start -> UI answers HTTP", http, goal="before any weights load",
            note="CPU: the server process"),
        row("4 start-up", "tiny", "process start -> first image", image, http, note="CPU: server + client",
            clock="wall"),
    ]


def measure_http(threads: int, repeats: int) -> list[Row]:
    """5. The same request through the HTTP API and through the core call: the queue's and encoding's cost."""
    from gradio_client import Client

    manager = loaded_manager(tiny_case("tiny"))
    request = dict(prompt=PROMPT, negative_prompt="", width=SIZE, height=SIZE, num_inference_steps=STEPS,
                   guidance_scale=5.0, scheduler="Euler", num_images=1)
    with running_server(threads) as (url, process, started):
        wait_for_http(url, process, started)
        client = Client(url, verbose=False)
        api_call(client, seed=0)  # warm-up: loads the model and fills the prompt cache
        generate(manager, GenerationRequest(**request, seed=0))
        api, core = [], []
        for seed in range(1, repeats + 1):
            server_cpu = process_cpu(process)
            sample = timed(lambda: api_call(client, seed))
            sample.cpu += process_cpu(process) - server_cpu  # the client's CPU here plus the server's there
            api.append(sample)
            core.append(timed(lambda: generate(manager, GenerationRequest(**request, seed=seed))))
    api, core = medians(api), medians(core)
    return [
        row("5 HTTP API", "tiny", "core generate()", core),
        row("5 HTTP API", "tiny", "gradio_client -> /text_to_image", api, core, "",
            f"queue + encoding: {(api.cpu - core.cpu) * 1e3:.0f} ms CPU, {(api.wall - core.wall) * 1e3:.0f} ms wall"),
    ]
