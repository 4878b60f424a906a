"""`--check`: what it prints on this machine, and the exit status where something blocks a run."""

import io
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from kolors_app.serving import doctor
from kolors_app.models import memory
from kolors_app.core.config import Settings
from kolors_app.serving.doctor import run_check

ROOT = Path(__file__).resolve().parent.parent


def check(settings) -> tuple[int, str]:
    out = io.StringIO()
    return run_check(settings, out), out.getvalue()


def test_check_on_this_machine_with_the_weights_cached(settings):
    status, text = check(settings)
    assert status == 0, text
    for package in ("torch", "diffusers", "transformers", "huggingface_hub", "accelerate", "gradio"):
        assert f"\n  {package} " in text
    assert "ok: the ChatGLM tokenizer works with transformers" in text
    assert "chosen: plan cpu: everything on the CPU, float32" in text
    assert "model: Kwai-Kolors/Kolors-diffusers cached" in text
    assert "IP-Adapter: Kwai-Kolors/Kolors-IP-Adapter-Plus cached" in text
    assert "GB free" in text and text.rstrip().endswith("OK: ready to run")
    if not torch.cuda.is_available():
        assert "cpu: no GPU found" in text


def test_check_blocks_when_the_weights_are_missing_offline(settings, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    status, text = check(settings)
    assert status == 1
    assert "BLOCKER: Weights not available: Kwai-Kolors/Kolors-diffusers is not in the Hugging Face cache" in text
    assert "about 17.9 GB to download" in text and "--model tiny" in text
    assert "WARNING: Weights not available: Kwai-Kolors/Kolors-IP-Adapter-Plus" in text
    assert text.rstrip().endswith("BLOCKED: 1 problem(s) above must be fixed before a run")


def test_check_blocks_when_the_disk_is_too_small(settings, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(doctor.downloads, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(doctor.downloads, "free_disk_bytes", lambda path=None: 4 * 10**9)
    status, text = check(settings)
    assert status == 1 and "BLOCKER: Not enough disk space to download Kwai-Kolors/Kolors-diffusers" in text


def test_known_bad_versions_block(settings, monkeypatch):
    versions = {"diffusers": "0.30.3", "transformers": "4.45.2"}
    real = doctor.installed_version
    monkeypatch.setattr(doctor, "installed_version", lambda name: versions.get(name) or real(name))
    monkeypatch.setattr(doctor, "tokenizer_accepts_padding_side", lambda: False)
    status, text = check(settings)
    assert status == 1
    assert "BLOCKER: diffusers 0.30.3 is too old" in text
    assert "BLOCKER: transformers 4.45.2 breaks this ChatGLM tokenizer (_pad() got an unexpected keyword " \
           "argument 'padding_side')" in text


def test_the_installed_tokenizer_takes_padding_side():
    assert doctor.tokenizer_accepts_padding_side()


def test_check_shows_the_plan_for_the_free_gpu_memory(settings, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *args: (10 * memory.GiB, 24 * memory.GiB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Test GPU 24GB")
    monkeypatch.setattr(memory, "bitsandbytes_available", lambda: False)
    status, text = check(Settings(device="auto"))
    assert "cuda: Test GPU 24GB, 10.0 GiB free of 24.0 GiB" in text
    assert "chosen: plan te-cpu: text encoder on the CPU, U-Net and VAE on cuda (float16)" in text
    assert "* te-cpu                8.5 (11.9)  yes" in text
    assert "  gpu                  20.6 (24.0)  no" in text
    assert "te-8bit" not in text


def test_cuda_asked_for_without_a_gpu_blocks(settings):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    status, text = check(Settings(device="cuda", model="tiny"))
    assert status == 1 and "BLOCKER: device=cuda but no CUDA GPU is visible" in text


def test_a_pinned_plan_that_cannot_run_blocks(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *args: (10 * memory.GiB, 24 * memory.GiB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Test GPU")
    monkeypatch.setattr(memory, "bitsandbytes_available", lambda: False)
    status, text = check(Settings(model="tiny", text_encoder="4bit"))
    assert status == 1 and "BLOCKER: text_encoder=4bit: needs a CUDA GPU and bitsandbytes" in text


def test_app_check_flag_runs_the_doctor():
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "app.py", "--check", "--model", "tiny", "--device", "cpu"], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Kolors Studio check" in done.stdout and "OK: ready to run" in done.stdout
