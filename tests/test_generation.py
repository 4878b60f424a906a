"""The generation core on the tiny Kolors: same pixels as bare diffusers, seeds, sharing, stop."""

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from diffusers import KolorsImg2ImgPipeline, KolorsPipeline
from PIL import Image
from transformers import CLIPVisionModelWithProjection

from kolors_app.engine.generation import RunControl, batch_seeds, generate
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import GenerationRequest, InitImage, Reference
from kolors_app.models.pipeline_manager import PipelineKey, PipelineManager

REPO = "Kwai-Kolors/Kolors-diffusers"
IP_REPO = "Kwai-Kolors/Kolors-IP-Adapter-Plus"
SMALL = dict(width=256, height=256, num_inference_steps=3, guidance_scale=5.0)


def pixels(image):
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def bare(hf_cache):
    """The pipeline a user would write by hand from the diffusers docs."""
    return KolorsPipeline.from_pretrained(REPO, variant="fp16", dtype=torch.float32)


def test_text_to_image_matches_bare_diffusers(manager, bare):
    result = generate(manager, GenerationRequest(prompt="一只红色的狐狸, a red fox", seed=1234, **SMALL))
    expected = bare(prompt="一只红色的狐狸, a red fox", negative_prompt="",
                    generator=torch.Generator("cpu").manual_seed(1234), **SMALL).images[0]
    assert result.images[0].seed == 1234
    assert np.array_equal(pixels(result.images[0].image), pixels(expected))
    assert result.images[0].image.size == (256, 256)


def test_image_to_image_matches_bare_diffusers(manager, bare, init_image):
    request = GenerationRequest(prompt="a painting", seed=7, init=InitImage(init_image, 0.6), **SMALL)
    result = generate(manager, request)
    pipe = KolorsImg2ImgPipeline.from_pipe(bare)
    expected = pipe(prompt="a painting", negative_prompt="", image=init_image, strength=0.6,
                    generator=torch.Generator("cpu").manual_seed(7), **SMALL).images[0]
    assert np.array_equal(pixels(result.images[0].image), pixels(expected))


def test_ip_adapter_matches_bare_diffusers_and_leaves_other_modes_unchanged(manager, init_image, hf_cache):
    before = generate(manager, GenerationRequest(prompt="a cat", seed=3, **SMALL)).images[0].image
    before_i2i = generate(manager, GenerationRequest(prompt="a cat", seed=3, init=InitImage(init_image), **SMALL))
    reference = Image.new("RGB", (300, 200), (200, 30, 30))
    result = generate(manager, GenerationRequest(prompt="a cat", seed=3, reference=Reference(reference, 0.7),
                                                **SMALL))

    encoder = CLIPVisionModelWithProjection.from_pretrained(IP_REPO, subfolder="image_encoder",
                                                            revision="refs/pr/4", dtype=torch.float32)
    pipe = KolorsPipeline.from_pretrained(REPO, image_encoder=encoder, variant="fp16", dtype=torch.float32)
    pipe.load_ip_adapter(IP_REPO, subfolder="", weight_name="ip_adapter_plus_general.safetensors",
                         revision="refs/pr/4", image_encoder_folder=None)
    pipe.set_ip_adapter_scale(0.7)
    expected = pipe(prompt="a cat", negative_prompt="", ip_adapter_image=reference,
                    generator=torch.Generator("cpu").manual_seed(3), **SMALL).images[0]
    assert np.array_equal(pixels(result.images[0].image), pixels(expected))
    assert not np.array_equal(pixels(result.images[0].image), pixels(before))

    after = generate(manager, GenerationRequest(prompt="a cat", seed=3, **SMALL)).images[0].image
    after_i2i = generate(manager, GenerationRequest(prompt="a cat", seed=3, init=InitImage(init_image), **SMALL))
    assert np.array_equal(pixels(after), pixels(before))
    assert np.array_equal(pixels(after_i2i.images[0].image), pixels(before_i2i.images[0].image))

    with_init = generate(manager, GenerationRequest(prompt="a cat", seed=3, reference=Reference(reference),
                                                    init=InitImage(init_image, 0.5), **SMALL))
    assert with_init.images[0].parameters["strength"] == 0.5
    assert np.isfinite(pixels(with_init.images[0].image)).all()


def test_pipelines_share_every_weight(manager):
    base = manager.pipeline()
    others = [manager.pipeline(PipelineKey("init")), manager.pipeline(PipelineKey(reference=True)),
              manager.pipeline(PipelineKey("init", reference=True))]
    for name in ("unet", "vae", "text_encoder"):
        pointers = {getattr(pipe, name).parameters().__next__().data_ptr() for pipe in [base, *others]}
        assert len(pointers) == 1, name
    assert others[1].image_encoder is others[2].image_encoder
    assert manager.pipeline(PipelineKey("init")) is others[0]


def test_batch_uses_consecutive_seeds_and_records_them(manager):
    result = generate(manager, GenerationRequest(prompt="a boat", seed=2**32 - 1, num_images=2, **SMALL))
    assert [item.seed for item in result.images] == [2**32 - 1, 0]
    assert [item.parameters["seed"] for item in result.images] == [2**32 - 1, 0]
    single = generate(manager, GenerationRequest(prompt="a boat", seed=0, **SMALL)).images[0].image
    assert np.abs(pixels(single) - pixels(result.images[1].image)).max() <= 2
    assert not np.array_equal(pixels(result.images[0].image), pixels(result.images[1].image))


def test_random_seed_is_concrete_and_in_range(manager):
    seeds = {generate(manager, GenerationRequest(prompt="a tree", seed=-1, **SMALL)).images[0].seed
             for _ in range(2)}
    assert all(0 <= seed <= 2**32 - 1 for seed in seeds) and len(seeds) == 2
    assert batch_seeds(5, 3) == [5, 6, 7]


@pytest.mark.parametrize("scheduler", ["Euler a", "DPM++ 2M Karras", "DPM++ 2M SDE Karras", "EDM DPM++ 2M",
                                       "UniPC", "DDIM", "DPM++ 2M"])
def test_every_scheduler_runs_without_reloading(manager, scheduler):
    unet = manager.pipeline().unet
    result = generate(manager, GenerationRequest(prompt="a lamp", seed=1, scheduler=scheduler, **SMALL))
    image = pixels(result.images[0].image)
    assert image.std() > 0 and manager.pipeline().unet is unet
    assert manager.pipeline().scheduler.config.num_train_timesteps == 1100


def test_progress_and_stop_within_one_step(manager):
    steps, stop = [], threading.Event()

    def on_progress(step, total):
        steps.append((step, total))
        stop.set()

    result = generate(manager, GenerationRequest(prompt="a road", seed=1, **{**SMALL, "num_inference_steps": 6}),
                      RunControl(on_progress=on_progress, stop=stop))
    assert result.stopped and result.images == []
    assert steps == [(1, 6)]
    again = generate(manager, GenerationRequest(prompt="a road", seed=1, **SMALL))
    assert len(again.images) == 1 and not again.stopped


def test_previews_arrive_during_the_run(manager):
    previews = []
    generate(manager, GenerationRequest(prompt="a road", seed=1, **{**SMALL, "num_inference_steps": 6}),
             RunControl(on_preview=lambda step, image: previews.append((step, image.size)), preview_every=2))
    assert [step for step, _ in previews] == [2, 4]
    assert all(size[0] >= 32 for _, size in previews)


def test_long_prompt_is_reported_not_silently_truncated(manager):
    result = generate(manager, GenerationRequest(prompt="红色 blue " * 300, seed=1, **SMALL))
    assert any("prompt is" in warning and "256" in warning for warning in result.warnings)
    short = generate(manager, GenerationRequest(prompt="red", seed=1, **SMALL))
    assert short.warnings == []


def test_bad_request_refused_before_any_model_work(settings):
    calls = []
    fresh = PipelineManager(settings, loader=lambda *args: calls.append(args))
    with pytest.raises(ValidationError, match="width"):
        generate(fresh, GenerationRequest(prompt="x", width=1001))
    assert calls == [] and not fresh.loaded


def test_core_does_not_import_gradio():
    code = ("import sys, kolors_app.engine.generation, kolors_app.models.pipeline_manager; "
            "print('gradio' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"
