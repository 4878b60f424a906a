"""The tiny Kolors repos load offline through the real Hub cache and produce real images."""

import hashlib
import json

import numpy as np
import pytest
import torch
from diffusers import KolorsImg2ImgPipeline, KolorsPipeline
from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer
from huggingface_hub import get_cached_repo_tree, hf_hub_download, scan_cache_dir
from PIL import Image
from transformers import CLIPVisionModelWithProjection

from kolors_app.core.config import Settings
from kolors_app.core.addons import INPAINTING_REPO
from kolors_app.hub.sources import WeightSources
from kolors_app.testing import tiny, tiny_kolors
from kolors_app.testing.tiny_presets import IP_ADAPTER_REPO, IP_ADAPTER_REVISION, IP_ADAPTER_WEIGHT_NAME, KOLORS_REPO

KOLORS_FILES = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/tokenizer.model",
    "tokenizer/tokenizer_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder/model.fp16.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.fp16.safetensors",
]
IP_ADAPTER_FILES = [
    "image_encoder/config.json",
    "image_encoder/model.safetensors",
    "image_encoder/preprocessor_config.json",
    IP_ADAPTER_WEIGHT_NAME,
]


def generate(pipe, seed=0, **kwargs):
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe(
        prompt="一只红色的狐狸 a red fox", num_inference_steps=2, height=256, width=256, generator=generator,
        output_type="np", **kwargs,
    ).images


@pytest.fixture(scope="module")
def pipe(hf_cache):
    pipe = KolorsPipeline.from_pretrained(KOLORS_REPO, variant="fp16", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def repo_folder(cache, repo_id):
    return cache / ("models--" + repo_id.replace("/", "--"))


def test_cache_has_the_real_layout(hf_cache):
    kolors = repo_folder(hf_cache, KOLORS_REPO)
    commit = (kolors / "refs" / "main").read_text()
    snapshot = kolors / "snapshots" / commit
    for name in KOLORS_FILES:
        assert (snapshot / name).is_symlink(), name
        assert (snapshot / name).resolve().parent == (kolors / "blobs").resolve(), name
    weights = (snapshot / "unet/diffusion_pytorch_model.safetensors").resolve()
    assert weights.name == hashlib.sha256(weights.read_bytes()).hexdigest()
    scheduler = json.loads((snapshot / "scheduler/scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "EulerDiscreteScheduler"
    assert scheduler["num_train_timesteps"] == 1100
    assert {f.path for f in get_cached_repo_tree(KOLORS_REPO)} == set(KOLORS_FILES)

    ip_adapter = repo_folder(hf_cache, IP_ADAPTER_REPO)
    pr_commit = (ip_adapter / "refs" / IP_ADAPTER_REVISION).read_text()
    assert (ip_adapter / "refs" / "main").read_text() == pr_commit
    for name in IP_ADAPTER_FILES:
        assert (ip_adapter / "snapshots" / pr_commit / name).is_file(), name
    path = hf_hub_download(IP_ADAPTER_REPO, IP_ADAPTER_WEIGHT_NAME, revision=IP_ADAPTER_REVISION)
    assert path.startswith(str(hf_cache))

    scan = scan_cache_dir(hf_cache)
    assert not scan.warnings
    refs = {repo.repo_id: {ref for revision in repo.revisions for ref in revision.refs} for repo in scan.repos}
    # Add-on repos (ControlNets, LoRAs) are installed into the same cache by the tests that use them.
    assert (refs[KOLORS_REPO], refs[IP_ADAPTER_REPO]) == ({"main"}, {"main", IP_ADAPTER_REVISION})


def test_install_is_idempotent(hf_cache):
    snapshots = tiny.install_into_hf_cache(hf_cache)
    assert snapshots[KOLORS_REPO].parent.parent == repo_folder(hf_cache, KOLORS_REPO)
    assert len(list((repo_folder(hf_cache, KOLORS_REPO) / "snapshots").iterdir())) == 1


def test_build_is_deterministic(tiny_dir, tmp_path):
    rebuilt = tiny_kolors.build_kolors_repo(tmp_path / "kolors")
    for name in KOLORS_FILES:
        assert (rebuilt / name).read_bytes() == (tiny_dir / KOLORS_REPO / name).read_bytes(), name


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="size must be one of"):
        tiny.tiny_model_dir("huge")


def test_model_tiny_loads_every_repo_from_the_tiny_build(tiny_dir):
    sources = tiny.tiny_sources()
    assert (sources.model, sources.ip_adapter) == (str(tiny_dir / KOLORS_REPO), str(tiny_dir / IP_ADAPTER_REPO))
    assert sources.addon(INPAINTING_REPO) == str(tiny_dir / INPAINTING_REPO) and (tiny_dir / INPAINTING_REPO).is_dir()
    assert WeightSources.of(Settings(model="a/b")).addon(INPAINTING_REPO) == INPAINTING_REPO
    with pytest.raises(ValueError, match="launcher"):
        WeightSources.of(Settings(model="tiny"))


def test_offline_pipeline_makes_finite_images_that_depend_on_the_seed(pipe):
    first, again, other = generate(pipe, 0), generate(pipe, 0), generate(pipe, 1)
    assert first.shape == (1, 256, 256, 3)
    assert np.isfinite(first).all() and first.std() > 0
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.01


def test_fp32_files_load_without_variant(pipe, hf_cache):
    fp32 = KolorsPipeline.from_pretrained(KOLORS_REPO)
    assert fp32.unet.dtype == torch.float32
    weight = fp32.unet.conv_in.weight
    torch.testing.assert_close(weight, pipe.unet.conv_in.weight, atol=1e-3, rtol=1e-3)


def test_text_encoder_and_tokenizer_are_the_real_chatglm_classes(pipe):
    assert isinstance(pipe.text_encoder, ChatGLMModel)
    assert isinstance(pipe.tokenizer, ChatGLMTokenizer)
    assert pipe.tokenizer.padding_side == "left"
    for text in ["a red fox in the rain, oil painting", "一只红色的狐狸，在雨中，油画", "emoji 🦊 ÄÖ 火锅"]:
        tokens = pipe.tokenizer(text, padding="max_length", max_length=256, truncation=True, return_tensors="pt")
        assert tokens["input_ids"].shape == (1, 256)
        assert tokens["attention_mask"][0, 0] == 0 and tokens["attention_mask"][0, -1] == 1
        assert text in pipe.tokenizer.decode(tokens["input_ids"][0])
    english, chinese = (pipe.encode_prompt(p, do_classifier_free_guidance=False)[0] for p in ["a fox", "一只狐狸"])
    assert torch.isfinite(english).all() and not torch.equal(english, chinese)


def test_ip_adapter_loads_offline_and_its_image_changes_the_output(hf_cache):
    encoder = CLIPVisionModelWithProjection.from_pretrained(
        IP_ADAPTER_REPO, subfolder="image_encoder", revision=IP_ADAPTER_REVISION
    )
    pipe = KolorsPipeline.from_pretrained(
        KOLORS_REPO, image_encoder=encoder, variant="fp16", dtype=torch.float32
    )
    pipe.load_ip_adapter(
        IP_ADAPTER_REPO, subfolder="", weight_name=IP_ADAPTER_WEIGHT_NAME, revision=IP_ADAPTER_REVISION,
        image_encoder_folder=None,
    )
    pipe.set_progress_bar_config(disable=True)
    red = Image.new("RGB", (64, 64), (220, 30, 30))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with_red, with_noise = generate(pipe, ip_adapter_image=red), generate(pipe, ip_adapter_image=noise)
    assert np.isfinite(with_red).all()
    assert np.abs(with_red - with_noise).max() > 0.01


def test_img2img_from_pipe_shares_the_components(pipe):
    img2img = KolorsImg2ImgPipeline.from_pipe(pipe)
    assert img2img.unet is pipe.unet
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    out = img2img(
        prompt="a red fox", image=image, strength=0.5, num_inference_steps=4,
        generator=torch.Generator("cpu").manual_seed(0), output_type="np",
    ).images
    assert out.shape == (1, 256, 256, 3) and np.isfinite(out).all()
