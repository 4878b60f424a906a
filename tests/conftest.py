import pytest

# --- Tiny offline Kolors models (kolors_app.tiny): built once per test session ---


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The tiny model folder: both tiny repos under their repo ids (see kolors_app.tiny.tiny_model_dir)."""
    from kolors_app.tiny import tiny_model_dir

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

    from kolors_app.tiny import install_into_hf_cache

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
    from kolors_app.config import Settings

    return Settings(device="cpu", outputs_dir=tmp_path_factory.mktemp("outputs"), save_outputs=False)


@pytest.fixture(scope="session")
def manager(settings):
    """One loaded pipeline manager shared by the session (loading is the slow part)."""
    from kolors_app.pipelines import PipelineManager

    manager = PipelineManager(settings)
    manager.load()
    return manager


# --- The app served on loopback with the tiny model (browser and HTTP tests) ---


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(tiny_dir, tmp_path_factory, *flags, env=None):
    """Start `python app.py --model tiny` on a free loopback port; returns (process, url, log path)."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    port = _free_port()
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
    process, url, log = start_app(tiny_dir, tmp_path_factory)
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except Exception:
        process.kill()
