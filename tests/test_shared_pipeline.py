"""A run of any kind leaves the shared pipeline as it found it: the next plain request makes bare diffusers' pixels."""

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import KolorsPipeline
from PIL import Image

from kolors_app.testing import tiny_creative
from kolors_app.engine.generation import generate
from kolors_app.core.creative_fields import HiresFix
from kolors_app.core.request import ControlUnit, GenerationRequest, InitImage, Inpaint, Reference
from kolors_app.models.pipeline_manager import PipelineManager

REPO = "Kwai-Kolors/Kolors-diffusers"
SMALL = dict(width=256, height=256, num_inference_steps=3, guidance_scale=5.0)
PLAIN = GenerationRequest(prompt="a lighthouse", negative_prompt="fog", seed=11, **SMALL)


def pixels(image):
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def bare_pixels(hf_cache):
    bare = KolorsPipeline.from_pretrained(REPO, variant="fp16", dtype=torch.float32)
    return pixels(bare(prompt=PLAIN.prompt, negative_prompt=PLAIN.negative_prompt,
                       generator=torch.Generator().manual_seed(PLAIN.seed), **SMALL).images[0])


@pytest.fixture(scope="module")
def shared(settings, hf_cache, tmp_path_factory):
    """One manager that every kind of request runs on, as the app's one loaded model is."""
    folder = tmp_path_factory.mktemp("shared-lora")
    tiny_creative.build_lora_folder(KolorsPipeline.from_pretrained(REPO, variant="fp16", dtype=torch.float32), folder)
    manager = PipelineManager(dataclasses.replace(settings, lora_dir=folder))
    manager.load()
    return manager


def other_requests(init_image):
    mask = Image.new("L", init_image.size, 0)
    mask.paste(255, (64, 64, 192, 192))
    return {
        # Each sampler's options must not follow the next request (DPM++ 2M Karras left Euler on Karras sigmas).
        "sampler": dataclasses.replace(PLAIN, scheduler="DPM++ 2M SDE Karras"),
        "lora": dataclasses.replace(PLAIN, loras=[{"name": "tiny-kohya", "weight": 1.0},
                                                  {"name": "tiny-text", "weight": 0.7}]),
        "hires": dataclasses.replace(PLAIN, hires=HiresFix(1.5, "Latent", 2, 0.5)),
        "image_to_image": dataclasses.replace(PLAIN, init=InitImage(init_image, 0.6), scheduler="UniPC"),
        "inpaint": dataclasses.replace(PLAIN, init=InitImage(init_image, 0.99), inpaint=Inpaint(mask)),
        "control": dataclasses.replace(PLAIN, controls=[ControlUnit("canny", init_image)]),
        "reference": dataclasses.replace(PLAIN, reference=Reference(init_image, 0.5)),
    }


@pytest.mark.parametrize("kind", ["sampler", "lora", "hires", "image_to_image", "inpaint", "control", "reference"])
def test_a_plain_request_after_another_kind_is_bare_diffusers(shared, bare_pixels, init_image, kind):
    generate(shared, other_requests(init_image)[kind])
    assert np.array_equal(pixels(generate(shared, PLAIN).images[0].image), bare_pixels)
