"""Memory plans: the choice from free memory, the loader arguments of each plan, and the OOM step-down."""

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import PipelineQuantizationConfig
from transformers import BitsAndBytesConfig

from kolors_app.models import memory
from kolors_app.core.config import Settings
from kolors_app.engine.generation import generate
from kolors_app.models.memory import GiB, LADDER, Features, OutOfGPUMemory, Plan, choose_plan, next_plan, peak_gib
from kolors_app.core.request import GenerationRequest
from kolors_app.models.loading import load_kolors, loader_arguments
from kolors_app.models.pipeline_manager import PipelineManager
from kolors_app.models.text_encoder import TextEncoderOnCPU

SMALL = dict(width=256, height=256, num_inference_steps=3, guidance_scale=5.0)
NAMES = [plan.name for plan in LADDER]


def pixels(image):
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("free_gib, expected", [
    (80, "gpu"), (21, "gpu"), (20.5, "te-8bit"), (16, "te-8bit"), (15.9, "te-4bit"), (12.5, "te-4bit"),
    (12, "te-cpu"), (8.5, "te-cpu"), (8, "model-offload"), (6.5, "sequential-offload"), (0.5, "sequential-offload"),
])
def test_plan_is_the_fastest_that_fits_the_free_memory(free_gib, expected):
    assert choose_plan(int(free_gib * GiB)).name == expected


def test_features_raise_the_memory_a_plan_needs():
    assert choose_plan(22 * GiB, Features(ip_adapter=True)).name == "te-8bit"
    assert choose_plan(22 * GiB, Features(1536, 1536, 4)).name == "te-4bit"
    assert choose_plan(22 * GiB, Features(512, 512)).name == "gpu"
    assert peak_gib(LADDER[0], Features(2048, 2048)) > peak_gib(LADDER[0])


def test_peaks_start_at_the_published_figure_and_fall_down_the_ladder():
    peaks = [peak_gib(plan) for plan in LADDER]
    assert peaks[0] == pytest.approx(20.6)
    assert peaks == sorted(peaks, reverse=True) and len(set(peaks)) == len(peaks)
    assert peak_gib(Plan("cpu", device="cpu", dtype=torch.float32)) == 0


def test_next_plan_walks_the_ladder_and_ends():
    walked, plan = [], LADDER[0]
    while plan is not None:
        walked.append(plan.name)
        plan = next_plan(plan)
    assert walked == NAMES


def test_plans_without_bitsandbytes_or_a_gpu():
    assert [p.name for p in memory.ladder_for("cuda", torch.float16, with_bitsandbytes=False)] == \
        ["gpu", "te-cpu", "model-offload", "sequential-offload"]
    assert [p.name for p in memory.ladder_for("cpu", torch.float32)] == ["cpu"]


def test_make_plan_with_injected_free_memory(monkeypatch):
    cuda = Settings(device="cuda")
    monkeypatch.setattr(memory, "bitsandbytes_available", lambda: False)
    plan, ladder = memory.make_plan(cuda, free_bytes=16 * GiB)
    assert (plan.name, plan.device, plan.dtype) == ("te-cpu", "cuda", torch.float16)
    assert [p.name for p in ladder] == ["te-cpu", "model-offload", "sequential-offload"]
    monkeypatch.setattr(memory, "bitsandbytes_available", lambda: True)
    assert memory.make_plan(cuda, free_bytes=16 * GiB)[0].name == "te-8bit"
    assert memory.make_plan(Settings(device="cuda", dtype="bfloat16"), free_bytes=40 * GiB)[0].dtype == torch.bfloat16
    assert memory.make_plan(Settings(device="cpu"))[0].name == "cpu"


def test_a_pinned_plan_does_not_step_down(monkeypatch):
    monkeypatch.setattr(memory, "bitsandbytes_available", lambda: False)
    plan, ladder = memory.make_plan(Settings(device="cuda", offload="model"), free_bytes=80 * GiB)
    assert (plan.text_encoder, plan.offload) == ("gpu", "model") and ladder == [plan]
    assert memory.make_plan(Settings(device="cuda", text_encoder="cpu"), free_bytes=80 * GiB)[0].name == "te-cpu"
    with pytest.raises(ValueError, match="text_encoder=8bit: needs a CUDA GPU and bitsandbytes"):
        memory.make_plan(Settings(device="cuda", text_encoder="8bit"))


def test_zero_gpu_runs_everything_on_the_gpu(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    plan, ladder = memory.make_plan(Settings(), free_bytes=0)
    assert plan.name == "gpu" and plan.device == "cuda" and ladder == [plan]


def cuda_plan(name):
    return next(plan for plan in LADDER if plan.name == name)


def test_loader_arguments_of_each_plan(tmp_path):
    hub = "Kwai-Kolors/Kolors-diffusers"
    assert loader_arguments(hub, cuda_plan("gpu")) == {"variant": "fp16", "dtype": torch.float16}
    eight = loader_arguments(hub, cuda_plan("te-8bit"))["quantization_config"]
    assert isinstance(eight, PipelineQuantizationConfig) and list(eight.quant_mapping) == ["text_encoder"]
    config = eight.quant_mapping["text_encoder"]
    assert isinstance(config, BitsAndBytesConfig) and config.load_in_8bit and not config.load_in_4bit
    four = loader_arguments(hub, cuda_plan("te-4bit"))["quantization_config"].quant_mapping["text_encoder"]
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_compute_dtype == torch.float16
    on_cpu = loader_arguments(hub, cuda_plan("te-cpu"))
    assert on_cpu["dtype"]["default"] == torch.float16
    assert on_cpu["dtype"]["text_encoder"] in (torch.float32, torch.bfloat16)
    assert "quantization_config" not in loader_arguments(hub, cuda_plan("sequential-offload"))
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert loader_arguments(str(tmp_path), cuda_plan("gpu"))["variant"] is None
    (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert loader_arguments(str(tmp_path), cuda_plan("gpu"))["variant"] == "fp16"


def test_text_encoder_on_cpu_gives_the_same_embeddings_and_hides_its_weights(manager):
    pipe = manager.pipeline()
    wrapped = TextEncoderOnCPU(pipe.text_encoder, torch.float32)
    assert not list(wrapped._parameters) and wrapped.state_dict() == {}
    assert next(wrapped.parameters()) is next(pipe.text_encoder.parameters())
    tokens = pipe.tokenizer(["a red fox"], padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        expected = pipe.text_encoder(**tokens, output_hidden_states=True)
        got = wrapped(**tokens, output_hidden_states=True)
    assert torch.equal(got["hidden_states"][-2], expected["hidden_states"][-2])


@pytest.fixture
def fresh(settings):
    """A manager of its own (these tests change its plan), with a ladder of two plans that both run on the CPU."""
    manager = PipelineManager(settings)
    manager.load()
    on_cpu = [dataclasses.replace(cuda_plan(name), device="cpu", dtype=torch.float32) for name in ("gpu", "te-cpu")]
    manager.plan, manager.ladder = on_cpu[0], on_cpu
    return manager


def fail_once(pipe, error):
    """Make the next U-Net forward of this pipeline raise error, once."""
    forward = pipe.unet.forward

    def failing(*args, **kwargs):
        pipe.unet.forward = forward
        raise error

    pipe.unet.forward = failing


OOM = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_steps_down_retries_and_the_next_request_succeeds(fresh, manager):
    request = GenerationRequest(prompt="a lighthouse", seed=11, **SMALL)
    expected = generate(manager, request).images[0].image
    fail_once(fresh.pipeline(), OOM)
    result = generate(fresh, request)
    assert len(result.images) == 1
    assert np.array_equal(pixels(result.images[0].image), pixels(expected))
    assert any(w.startswith("Out of GPU memory with plan gpu: retried with plan te-cpu") for w in result.warnings)
    assert fresh.plan.name == "te-cpu" and isinstance(fresh.pipeline().text_encoder, TextEncoderOnCPU)
    assert "stepped down from gpu" in fresh.status
    again = generate(fresh, GenerationRequest(prompt="a lighthouse", seed=12, **SMALL))
    assert len(again.images) == 1 and again.warnings == []


def test_out_of_memory_on_the_last_plan_is_one_clear_error_and_the_server_keeps_serving(fresh):
    fresh.plan = fresh.ladder[-1]
    fail_once(fresh.pipeline(), RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"))
    with pytest.raises(OutOfGPUMemory, match="plan te-cpu, the last plan; lower width/height or num_images"):
        generate(fresh, GenerationRequest(prompt="a bridge", seed=1, **SMALL))
    assert len(generate(fresh, GenerationRequest(prompt="a bridge", seed=1, **SMALL)).images) == 1


def test_running_out_again_after_the_step_down_names_both_plans(fresh):
    pipe = fresh.pipeline()
    fail_once(pipe, OOM)
    original = fresh._load_plan

    def load_then_fail(plan, source):
        loaded = original(plan, source)
        fail_once(loaded, OOM)
        return loaded

    fresh._load_plan = load_then_fail
    with pytest.raises(OutOfGPUMemory, match="with plan gpu and again with plan te-cpu"):
        generate(fresh, GenerationRequest(prompt="a bridge", seed=1, **SMALL))


def test_other_errors_pass_through_without_a_step_down(fresh):
    fail_once(fresh.pipeline(), RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate(fresh, GenerationRequest(prompt="a bridge", seed=1, **SMALL))
    assert fresh.plan.name == "gpu"


def test_out_of_memory_while_loading_tries_the_next_plan(settings):
    tried = []

    def loader(source, plan):
        tried.append(plan.name)
        if plan.name == "gpu":
            raise OOM
        return load_kolors(source, plan)

    manager = PipelineManager(settings, loader=loader)
    on_cpu = [dataclasses.replace(cuda_plan(name), device="cpu", dtype=torch.float32) for name in ("gpu", "te-cpu")]
    manager.ladder = on_cpu
    manager._load_plan(on_cpu[0], "Kwai-Kolors/Kolors-diffusers")
    assert tried == ["gpu", "te-cpu"] and manager.plan.name == "te-cpu"


def test_vae_slices_batches_and_tiles_large_images_on_a_gpu(fresh):
    vae = fresh.pipeline().vae
    fresh.configure_vae(Features(1536, 1024, 2))
    assert not vae.use_tiling and not vae.use_slicing
    fresh.plan = dataclasses.replace(fresh.plan, device="cuda")
    fresh.configure_vae(Features(1024, 1024, 1))
    assert not vae.use_tiling and not vae.use_slicing
    fresh.configure_vae(Features(1536, 1024, 2))
    assert vae.use_tiling and vae.use_slicing
    fresh.configure_vae(Features(512, 512, 1))
    assert not vae.use_tiling and not vae.use_slicing


def test_is_out_of_memory():
    assert memory.is_out_of_memory(OOM)
    assert memory.is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not memory.is_out_of_memory(RuntimeError("expected all tensors on the same device"))
    assert not memory.is_out_of_memory(MemoryError())


def test_the_documented_table_is_the_computed_one():
    assert memory.plan_table() in memory.__doc__
