import dataclasses
from pathlib import Path

import pytest

# --- Tiny offline Kolors models (kolors_app.testing.tiny): built once per test session ---


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The tiny model folder: both tiny repos under their repo ids (see kolors_app.testing.tiny.tiny_model_dir)."""
    from kolors_app.testing.tiny import tiny_model_dir

    with pytest.MonkeyPatch.context() as patch:
        # Kept for the whole session, so code under test that calls tiny_model_dir() reuses this build.
        patch.setenv("KOLORS_TINY_DIR", str(tmp_path_factory.mktemp("kolors-tiny")))
        yield tiny_model_dir()


@pytest.fixture(scope="session")
def hf_cache(tiny_dir, tmp_path_factory):
    """A Hugging Face hub cache holding the tiny Kolors repos, with the hub offline for the session."""
    import diffusers.loaders.lora_base
    import diffusers.models.attention_dispatch
    import diffusers.utils.hub_utils
    import huggingface_hub.constants

    from kolors_app.testing.tiny import install_into_hf_cache

    cache = tmp_path_factory.mktemp("hf-hub")
    install_into_hf_cache(cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HUB_CACHE", str(cache))
        # huggingface_hub and diffusers read these at import time, before any fixture runs.
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        for module in (diffusers.loaders.lora_base, diffusers.models.attention_dispatch, diffusers.utils.hub_utils):
            patch.setattr(module, "HF_HUB_OFFLINE", True)
        yield cache


# --- The app's core on the tiny model ---


@pytest.fixture(scope="session")
def settings(hf_cache, tmp_path_factory):
    """Default settings (the real Hub repo ids, resolved from the tiny offline cache) on the CPU."""
    from kolors_app.core.config import Settings

    return Settings(device="cpu", outputs_dir=tmp_path_factory.mktemp("outputs"), save_outputs=False)


@pytest.fixture
def init_image():
    """A 256 px grey gradient, an init image whose pixels every test can predict."""
    import numpy as np
    from PIL import Image

    gradient = np.linspace(0, 255, 256, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(gradient, (256, 1))] * 3, axis=-1))


@pytest.fixture(scope="session")
def manager(settings):
    """One loaded pipeline manager shared by the session (loading is the slow part)."""
    from kolors_app.models.pipeline_manager import PipelineManager

    manager = PipelineManager(settings)
    manager.load()
    return manager


# --- The app served on loopback with the tiny model (browser and HTTP tests) ---


def start_app_process(tiny_dir, tmp_path_factory, *flags, env=None):
    """Start `python app.py --model tiny` on a free loopback port; returns (process, url, log path)."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from gradio_http import free_port

    root = Path(__file__).resolve().parent.parent
    port = free_port()
    home = tmp_path_factory.mktemp("app-home")
    log = home / "server.log"
    environment = {**os.environ, "XDG_CONFIG_HOME": str(home), "GRADIO_TEMP_DIR": str(home / "gradio"),
                   "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
    command = [sys.executable, str(root / "app.py"), "--model", "tiny", "--device", "cpu", "--port", str(port),
               "--outputs-dir", str(home / "outputs"), *flags]
    process = subprocess.Popen(command, cwd=root, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return process, url, log
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"app did not answer within 180 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def live_app(tiny_dir, tmp_path_factory):
    """The URL of the app running with the tiny model on loopback, shared by the session."""
    from gradio_http import stop_process

    process, url, log = start_app_process(tiny_dir, tmp_path_factory)
    yield url
    stop_process(process)


@pytest.fixture(scope="module")
def start_app(tiny_dir, tmp_path_factory):
    """start_app_process with its first two arguments, for tests that start (and kill) their own app."""
    return lambda *flags, **options: start_app_process(tiny_dir, tmp_path_factory, *flags, **options)


# --- The app over HTTP (hardening tests) ---


@pytest.fixture(scope="module")
def client(live_app):
    from gradio_client import Client

    return Client(live_app, verbose=False)


@pytest.fixture(scope="module")
def raw(live_app):
    from gradio_http import Raw

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
    from gradio_http import free_port

    from kolors_app.launch import launch

    folder = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        patch.setenv("XDG_CONFIG_HOME", str(folder / "config"))
        app_settings = dataclasses.replace(settings, port=free_port(), outputs_dir=folder / "outputs",
                                           save_outputs=True)
        app, ctx = launch(app_settings, manager, prevent_thread_lock=True, quiet=True)
        try:
            yield Served(f"http://127.0.0.1:{app_settings.port}/", app, ctx, folder)
        finally:
            app.close()


# --- The UI built but not launched (UI tests) ---


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory):
    """gradio's upload and cache folder, private to the module."""
    folder = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def built(settings, manager, upload_dir):
    """(app, ctx): the whole UI around the session's tiny manager, built but never launched."""
    from kolors_app.launch import build

    return build(settings, manager)


@pytest.fixture(scope="module")
def t2i_run(built):
    """One text-to-image run of two images through the tab's own handler: (outputs, progress)."""
    from ui_handlers import SMALL, FakeProgress

    app, ctx = built
    ctx.update_seconds = ctx.preview_seconds = 0  # progress and a preview at every step, for the tests to count
    progress = FakeProgress()
    text_to_image = app.studio_tabs["text_to_image"].handler
    outputs = list(text_to_image("一只红色的狐狸, a red fox", "blurry", num_inference_steps=5, seed=42, num_images=2,
                                 request=None, progress=progress, **SMALL))
    return outputs, progress
