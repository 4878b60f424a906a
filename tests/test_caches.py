"""The embedding caches: hits, misses, keys, eviction, disk, and the same pixels with and without them."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import KolorsPipeline
from PIL import Image

from bench.common import ForwardCounter
from kolors_app.models.embeddings import EmbeddingCaches, LRUCache, caches_for
from kolors_app.engine.generation import generate
from kolors_app.core.request import GenerationRequest, InitImage, Reference
from kolors_app.models.pipeline_manager import PipelineKey, PipelineManager

REPO = "Kwai-Kolors/Kolors-diffusers"
SMALL = dict(width=256, height=256, num_inference_steps=3, guidance_scale=5.0)


def pixels(result, index=0):
    return np.asarray(result.images[index].image, dtype=np.int16)


@pytest.fixture
def text_calls(manager):
    caches_for(manager).clear()
    counter = ForwardCounter(manager.load().text_encoder)
    yield counter
    counter.close()


@pytest.fixture(scope="module")
def uncached(settings):
    """A second manager with both caches off: every run encodes its prompts and images again."""
    manager = PipelineManager(dataclasses.replace(settings, embedding_cache_mb=0))
    manager.load()
    return manager


def test_new_seed_runs_no_text_encoder(manager, text_calls):
    first = generate(manager, GenerationRequest(prompt="a red fox", seed=1, **SMALL))
    assert text_calls.calls == 2  # prompt and negative prompt, one forward each
    generate(manager, GenerationRequest(prompt="a red fox", seed=2, **SMALL))
    again = generate(manager, GenerationRequest(prompt="a red fox", seed=1, **SMALL))
    assert text_calls.calls == 2
    assert np.array_equal(pixels(first), pixels(again))
    stats = caches_for(manager).stats()["prompts"]
    assert (stats["hits"], stats["misses"], stats["entries"]) == (4, 2, 2)


def test_key_is_per_text_so_a_new_negative_costs_one_forward(manager, text_calls):
    generate(manager, GenerationRequest(prompt="a boat", negative_prompt="blurry", seed=1, **SMALL))
    generate(manager, GenerationRequest(prompt="a boat", negative_prompt="dark", seed=1, **SMALL))
    assert text_calls.calls == 3
    generate(manager, GenerationRequest(prompt="a boat at night", negative_prompt="dark", seed=1, **SMALL))
    assert text_calls.calls == 4
    # Without guidance the negative prompt is never encoded.
    generate(manager, GenerationRequest(prompt="a cart", negative_prompt="unseen", seed=1,
                                         **{**SMALL, "guidance_scale": 1.0}))
    assert text_calls.calls == 5


@pytest.mark.parametrize("guidance_scale", [5.0, 1.0])
def test_same_pixels_with_and_without_the_cache(manager, uncached, guidance_scale):
    request = GenerationRequest(prompt="灯塔 a lighthouse", negative_prompt="fog", seed=11, num_images=2,
                                 **{**SMALL, "guidance_scale": guidance_scale})
    caches_for(manager).clear()
    cold = generate(manager, request)
    warm = generate(manager, request)
    reference = generate(uncached, request)
    for index in range(2):
        assert np.array_equal(pixels(cold, index), pixels(reference, index))
        assert np.array_equal(pixels(warm, index), pixels(reference, index))
    assert caches_for(uncached).stats()["prompts"]["entries"] == 0


def test_batch_from_cached_embeddings_matches_bare_diffusers(manager, hf_cache):
    caches_for(manager).clear()
    generate(manager, GenerationRequest(prompt="a kite", seed=5, **SMALL))
    result = generate(manager, GenerationRequest(prompt="a kite", seed=5, num_images=2, **SMALL))
    bare = KolorsPipeline.from_pretrained(REPO, variant="fp16", dtype=torch.float32)
    expected = bare(prompt="a kite", negative_prompt="", num_images_per_prompt=2,
                    generator=[torch.Generator("cpu").manual_seed(seed) for seed in (5, 6)], **SMALL).images
    for index in range(2):
        assert np.array_equal(pixels(result, index), np.asarray(expected[index], dtype=np.int16))


def test_image_to_image_uses_the_cache_with_the_same_pixels(manager, uncached, text_calls, init_image):
    request = GenerationRequest(prompt="a painting", seed=7, init=InitImage(init_image, 0.6), num_images=2, **SMALL)
    first = generate(manager, request)
    second = generate(manager, dataclasses.replace(request, seed=8))
    assert text_calls.calls == 2
    reference = generate(uncached, request)
    assert np.array_equal(pixels(first, 1), pixels(reference, 1))
    assert not np.array_equal(pixels(first), pixels(second))


def test_ip_adapter_embeddings_are_keyed_by_content_not_scale(manager, uncached, init_image):
    caches_for(manager).clear()
    encoder = manager.pipeline(PipelineKey(reference=True)).image_encoder
    image_calls = ForwardCounter(encoder)
    try:
        reference = Image.new("RGB", (300, 200), (200, 30, 30))
        request = GenerationRequest(prompt="a cat", seed=3, reference=Reference(reference, 0.7), **SMALL)
        first = generate(manager, request)
        calls = image_calls.calls
        assert calls == 2  # the image and its all-zero unconditional twin
        same_content = reference.copy()
        again = generate(manager, dataclasses.replace(request, reference=Reference(same_content, 0.7)))
        rescaled = generate(manager, dataclasses.replace(request, reference=Reference(reference, 0.2)))
        assert image_calls.calls == calls
        assert np.array_equal(pixels(first), pixels(again))
        assert not np.array_equal(pixels(first), pixels(rescaled))
        other = Image.new("RGB", (300, 200), (30, 30, 200))
        generate(manager, dataclasses.replace(request, reference=Reference(other, 0.7)))
        assert image_calls.calls == calls + 2
        assert caches_for(manager).stats()["images"]["hits"] == 2
    finally:
        image_calls.close()
    for changes in ({}, {"guidance_scale": 1.0}, {"init": InitImage(init_image, 0.5)}):
        request_now = dataclasses.replace(request, **changes)
        assert np.array_equal(pixels(generate(manager, request_now)), pixels(generate(uncached, request_now)))


def test_disk_cache_serves_a_new_process_without_the_text_encoder(settings, manager, tmp_path):
    pipe = manager.pipeline()
    writer = EmbeddingCaches(2**20, disk_dir=tmp_path)
    written = writer.prompt_arguments(pipe, "a mill", "rain", 1, 5.0)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    reader = EmbeddingCaches(2**20, disk_dir=tmp_path)
    counter = ForwardCounter(pipe.text_encoder)
    try:
        read = reader.prompt_arguments(pipe, "a mill", "rain", 1, 5.0)
    finally:
        counter.close()
    assert counter.calls == 0 and reader.stats()["disk_hits"] == 2
    assert all(torch.equal(written[name], read[name]) for name in written)

    disk_manager = PipelineManager(dataclasses.replace(settings, embedding_cache_dir=tmp_path / "through-settings"))
    request = GenerationRequest(prompt="a mill", seed=4, **SMALL)
    assert np.array_equal(pixels(generate(disk_manager, request)), pixels(generate(manager, request)))
    assert len(list((tmp_path / "through-settings").glob("*.safetensors"))) == 2


def test_text_encoder_precision_is_part_of_the_key(hf_cache):
    pipe = KolorsPipeline.from_pretrained(REPO, variant="fp16", dtype=torch.float32)
    caches = EmbeddingCaches(2**20)
    full = caches.prompt_arguments(pipe, "a bell", "", 2, 5.0)
    pipe.text_encoder.to(torch.bfloat16)
    low = caches.prompt_arguments(pipe, "a bell", "", 2, 5.0)
    assert caches.stats()["prompts"]["misses"] == 4
    for name, tensor in low.items():
        assert tensor.dtype == torch.bfloat16 and tensor.shape == full[name].shape and tensor.shape[0] == 2


def test_lru_keeps_the_recently_used_within_its_byte_cap():
    cache = LRUCache(max_bytes=30)
    for key in "abc":
        cache.put(key, key.upper(), 10)
    assert cache.get("a") == "A"
    cache.put("d", "D", 10)
    assert cache.get("b") is None and cache.get("a") == "A" and cache.get("d") == "D"
    cache.put("huge", "X", 31)
    assert cache.get("huge") is None
    assert cache.stats() == {"entries": 3, "bytes": 30, "hits": 3, "misses": 2}
    assert len(LRUCache(0)) == 0


def test_gpu_options_apply_and_keep_images_close(settings, manager):
    fast = PipelineManager(dataclasses.replace(settings, attention="eager", fuse_qkv=True, channels_last=True,
                                               vae_slicing=True, vae_tiling=True))
    unet = fast.load().unet
    fused = [module for module in unet.modules() if getattr(module, "fused_projections", False)]
    storage = [(module.to_k.weight.untyped_storage().data_ptr(),
                (module.to_kv if module.is_cross_attention else module.to_qkv).weight.untyped_storage().data_ptr())
               for module in fused]
    assert fused and all(mine == theirs for mine, theirs in storage)  # fusing duplicated no weight
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    reference_image = Image.new("RGB", (64, 64), (10, 200, 90))
    for request in (GenerationRequest(prompt="a lamp", seed=1, num_images=2, **SMALL),
                    GenerationRequest(prompt="a lamp", seed=1, reference=Reference(reference_image), **SMALL)):
        assert np.abs(pixels(generate(fast, request)) - pixels(generate(manager, request))).max() <= 2
    assert fast.load().vae.use_slicing


def test_importing_the_core_loads_no_model_library():
    code = ("import sys, kolors_app.engine.generation, kolors_app.models.embeddings, kolors_app.models.gpu_options; "
            "print([name for name in ('diffusers', 'transformers', 'gradio') if name in sys.modules])")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
