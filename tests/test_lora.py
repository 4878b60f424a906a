"""LoRAs: folder and Hub sources, diffusers/PEFT/kohya files, refusal of other models', switching, metadata."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from kolors_app.core.errors import ValidationError
from kolors_app.core.prompt_syntax import split_lora_tags
from kolors_app.core.schema import read_lora_choices
from kolors_app.creative import lora
from kolors_app.metadata.creative_infotext import lora_hashes_text, parse_lora_hashes
from kolors_app.testing import tiny_creative
from kolors_app.models.embeddings import EmbeddingCaches
from kolors_app.testing.hub_cache import install_repo
from kolors_app.testing.tiny_presets import KOLORS_REPO

STEPS = dict(num_inference_steps=2, width=256, height=256, output_type="np")


def fresh_pipe(tiny_dir):
    from diffusers import KolorsPipeline

    return KolorsPipeline.from_pretrained(tiny_dir / KOLORS_REPO)


def run(pipe, **extra):
    return pipe(prompt="一只红色的狐狸, a red fox", generator=torch.Generator().manual_seed(3), **STEPS, **extra).images


@pytest.fixture(scope="module")
def lora_dir(tiny_dir, tmp_path_factory):
    pipe = fresh_pipe(tiny_dir)
    folder = tiny_creative.build_lora_folder(pipe, tmp_path_factory.mktemp("loras"))
    # Kolors' DreamBooth layout: U-Net LoRA file plus a PEFT adapter folder for ChatGLM.
    tiny_creative.build_diffusers_lora(pipe, folder / "tiny-dreambooth", seed=40)
    tiny_creative.build_peft_text_encoder_adapter(pipe, folder / "tiny-dreambooth" / "text_encoder")
    return folder


@pytest.fixture(scope="module")
def base_pixels(tiny_dir):
    return run(fresh_pipe(tiny_dir))


def has_lora_layers(pipe) -> bool:
    return any("lora_A" in name for name, _ in pipe.unet.named_modules()) or \
        any("lora_A" in name for name, _ in pipe.text_encoder.named_modules())


def test_prompt_tags_are_removed_and_parsed():
    text, choices = split_lora_tags("<lora:tiny-style:0.8> 一只猫, <lora:owner/repo> in snow")
    assert text == "一只猫, in snow"
    assert choices == [lora.LoraChoice("tiny-style", 0.8), lora.LoraChoice("owner/repo", 1.0)]
    assert split_lora_tags("no tags") == ("no tags", [])


def test_folder_scan_search_and_refresh(lora_dir):
    library = lora.LoraLibrary(lora_dir)
    assert library.names() == ["sd15-style", "tiny-dreambooth", "tiny-kohya", "tiny-style", "tiny-text"]
    assert library.search("TINY k") == ["tiny-kohya"]
    (lora_dir / "late.safetensors").write_bytes((lora_dir / "tiny-kohya.safetensors").read_bytes())
    try:
        assert "late" not in library.names()
        assert "late" in library.refresh()
    finally:
        (lora_dir / "late.safetensors").unlink()


def test_bad_choices_name_the_field():
    with pytest.raises(ValidationError, match="loras.0.weight: must be from -4 to 4, got 9"):
        read_lora_choices([{"name": "a", "weight": 9}])
    with pytest.raises(lora.LoraError, match="loras: unknown LoRA 'nope'"):
        lora.LoraLibrary("/nonexistent").get("nope")


def test_lora_for_another_model_is_refused_before_any_weight_is_touched(tiny_dir, lora_dir):
    pipe = fresh_pipe(tiny_dir)
    switcher = lora.LoraSwitcher(lora.LoraLibrary(lora_dir))
    with pytest.raises(lora.LoraError, match="sd15-style.*(another model|not Kolors)"):
        switcher.apply(pipe, [lora.LoraChoice("sd15-style", 1.0)])
    assert not has_lora_layers(pipe)
    # Without the telling metadata, the key shapes give it away.
    state = load_file(lora_dir / "sd15-style.safetensors")
    (lora_dir / "sub").mkdir(exist_ok=True)
    save_file(state, lora_dir / "sub" / "nometa.safetensors")
    switcher.library.refresh()
    with pytest.raises(lora.LoraError, match="does not fit Kolors: U-Net layer"):
        switcher.apply(pipe, [lora.LoraChoice("sub/nometa", 1.0)])
    assert not has_lora_layers(pipe)


def test_sdxl_lora_is_refused(tiny_dir, tmp_path):
    pipe = fresh_pipe(tiny_dir)
    save_file({"text_encoder_2.text_model.q_proj.lora_A.weight": torch.zeros(4, 8),
               "unet.down_blocks.1.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 8)}, tmp_path / "xl.safetensors")
    with pytest.raises(lora.LoraError, match="SDXL"):
        lora.LoraSwitcher(lora.LoraLibrary(tmp_path)).apply(pipe, [lora.LoraChoice("xl", 1.0)])
    assert not has_lora_layers(pipe)


def bare_diffusers(tiny_dir, lora_dir, names_weights):
    pipe = fresh_pipe(tiny_dir)
    for name, _ in names_weights:
        path = lora_dir / name if (lora_dir / name).is_dir() else lora_dir / f"{name}.safetensors"
        pipe.load_lora_weights(path, adapter_name=name.replace("-", "_"))
    pipe.set_adapters([n.replace("-", "_") for n, _ in names_weights], [w for _, w in names_weights])
    return pipe


def test_pixels_equal_bare_diffusers_text_and_image_to_image(tiny_dir, lora_dir, base_pixels, init_image):
    from diffusers import KolorsImg2ImgPipeline

    chosen = [("tiny-style", 0.8), ("tiny-kohya", 0.5)]
    ours = fresh_pipe(tiny_dir)
    lora.LoraSwitcher(lora.LoraLibrary(lora_dir)).apply(ours, [lora.LoraChoice(n, w) for n, w in chosen])
    bare = bare_diffusers(tiny_dir, lora_dir, chosen)
    mine = run(ours)
    assert np.abs(mine - base_pixels).max() > 0.01  # the LoRAs do change the image
    assert np.array_equal(mine, run(bare))
    image = dict(image=init_image, strength=0.6, num_inference_steps=4)
    kwargs = {**STEPS, **image}

    def i2i(pipe):
        return KolorsImg2ImgPipeline.from_pipe(pipe)(prompt="a fox", generator=torch.Generator().manual_seed(5),
                                                     **kwargs).images

    assert np.array_equal(i2i(ours), i2i(bare))


def test_switching_by_weight_never_reloads(tiny_dir, lora_dir, base_pixels):
    pipe = fresh_pipe(tiny_dir)
    unet = pipe.unet
    switcher = lora.LoraSwitcher(lora.LoraLibrary(lora_dir))
    switcher.apply(pipe, [lora.LoraChoice("tiny-style", 1.0)])
    first = run(pipe)
    switcher.apply(pipe, [lora.LoraChoice("tiny-kohya", 0.7)])
    switcher.apply(pipe, [])
    assert np.array_equal(run(pipe), base_pixels)  # none active: exactly the base model
    switcher.apply(pipe, [lora.LoraChoice("tiny-style", 1.0)])
    assert np.array_equal(run(pipe), first)
    assert switcher.loads == 2 and pipe.unet is unet


def test_loaded_adapters_are_bounded_least_recent_released(tiny_dir, lora_dir):
    pipe = fresh_pipe(tiny_dir)
    switcher = lora.LoraSwitcher(lora.LoraLibrary(lora_dir), max_loaded=2)
    for name in ("tiny-style", "tiny-kohya", "tiny-text"):
        switcher.apply(pipe, [lora.LoraChoice(name, 1.0)])
    assert switcher.loaded == ["tiny-kohya", "tiny-text"]
    assert len(pipe.get_list_adapters()["unet"]) == 2


def test_text_encoder_lora_changes_embeddings_and_the_cache_keys_on_it(tiny_dir, lora_dir):
    pipe = fresh_pipe(tiny_dir)
    caches = EmbeddingCaches(64 * 2**20)
    switcher = lora.LoraSwitcher(lora.LoraLibrary(lora_dir))
    plain = caches.text(pipe, "a fox").hidden
    applied = switcher.apply(pipe, [lora.LoraChoice("tiny-text", 1.0)])
    assert applied[0].text_encoder
    styled = caches.text(pipe, "a fox").hidden
    assert not torch.equal(plain, styled)
    switcher.apply(pipe, [lora.LoraChoice("tiny-text", 0.5)])
    half = caches.text(pipe, "a fox").hidden
    assert not torch.equal(half, styled)
    switcher.apply(pipe, [])
    assert torch.equal(caches.text(pipe, "a fox").hidden, plain)
    assert caches.prompts.stats()["misses"] == 3 and caches.prompts.stats()["hits"] == 1


def test_dreambooth_peft_text_encoder_adapter_equals_transformers_load_adapter(tiny_dir, lora_dir):
    from peft import LoraConfig

    ours = fresh_pipe(tiny_dir)
    lora.LoraSwitcher(lora.LoraLibrary(lora_dir)).apply(ours, [lora.LoraChoice("tiny-dreambooth", 0.6)])
    bare = fresh_pipe(tiny_dir)
    bare.load_lora_weights(lora_dir / "tiny-dreambooth", adapter_name="d")
    adapter = lora_dir / "tiny-dreambooth" / "text_encoder"
    saved = load_file(adapter / "adapter_model.safetensors")
    state = {k.removeprefix("base_model.model."): v for k, v in saved.items()}
    config = LoraConfig(r=tiny_creative.RANK, lora_alpha=tiny_creative.RANK,
                        target_modules=tiny_creative.TEXT_ENCODER_TARGETS)
    bare.text_encoder.load_adapter(adapter_name="d", adapter_state_dict=state, peft_config=config)
    bare.set_adapters(["d"], [0.6])
    assert np.array_equal(run(ours), run(bare))


def test_hub_repo_id_loads_from_the_cache(tiny_dir, lora_dir, hf_cache, base_pixels):
    install_repo(hf_cache, "someone/tiny-kolors-lora", lora_dir / "tiny-style", ["main"])
    pipe = fresh_pipe(tiny_dir)
    library = lora.LoraLibrary(lora_dir)
    with pytest.raises(lora.LoraError, match="unknown LoRA"):
        library.get("someone/tiny-kolors-lora")  # listed only once fetched (before the GPU slot)
    library.fetch("someone/tiny-kolors-lora")  # offline: the cached copy
    lora.LoraSwitcher(library).apply(pipe, [lora.LoraChoice("someone/tiny-kolors-lora", 1.0)])
    assert not np.array_equal(run(pipe), base_pixels)


def prompt_embeds(pipe) -> torch.Tensor:
    return pipe.encode_prompt("一只红色的狐狸, a red fox", device="cpu", do_classifier_free_guidance=False)[0]


def with_peft_config(tiny_dir, layers: dict, alpha: float) -> torch.Tensor:
    """The prompt embeddings with these ChatGLM layers applied by PEFT's own LoraConfig(r, lora_alpha)."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    pipe = fresh_pipe(tiny_dir)
    config = LoraConfig(r=tiny_creative.RANK, lora_alpha=alpha, target_modules=tiny_creative.TEXT_ENCODER_TARGETS)
    inject_adapter_in_model(config, pipe.text_encoder, adapter_name="reference")
    set_peft_model_state_dict(pipe.text_encoder, layers, adapter_name="reference")
    return prompt_embeds(pipe)


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_text_encoder_alpha_scales_the_layers_as_peft_does(tiny_dir, tmp_path, layout):
    alpha = 2.0  # rank 4: every ChatGLM layer scaled by 0.5
    source = fresh_pipe(tiny_dir)
    if layout == "kohya":  # an `alpha` key per module
        tiny_creative.build_kohya_lora(source, tmp_path / "te.safetensors", seed=50, text_encoder=True,
                                       text_alpha=alpha)
        layers = tiny_creative.text_encoder_layers(source, 51)
    else:  # Kolors' DreamBooth layout: lora_alpha in the adapter's adapter_config.json
        tiny_creative.build_diffusers_lora(source, tmp_path / "te", seed=50)
        tiny_creative.build_peft_text_encoder_adapter(source, tmp_path / "te" / "text_encoder", seed=51, alpha=alpha)
        layers = tiny_creative.text_encoder_layers(source, 51)
    ours = fresh_pipe(tiny_dir)
    applied = lora.LoraSwitcher(lora.LoraLibrary(tmp_path)).apply(ours, [lora.LoraChoice("te", 1.0)])
    assert applied[0].text_encoder
    mine = prompt_embeds(ours)
    assert torch.allclose(mine, with_peft_config(tiny_dir, layers, alpha), atol=1e-6, rtol=0)
    # Read as alpha = rank (scale 1), the embeddings are another model's.
    assert not torch.allclose(mine, with_peft_config(tiny_dir, layers, tiny_creative.RANK), atol=1e-3)


def test_hashes_written_and_restored_by_name_or_hash(lora_dir, tmp_path):
    library = lora.LoraLibrary(lora_dir)
    style = library.get("tiny-style")
    applied = [lora.AppliedLora("tiny-style", 0.8, style.hash, False)]
    text = lora_hashes_text([(item.name, item.hash) for item in applied])
    assert text == f"tiny-style: {style.hash}" and len(style.hash) == 12
    assert parse_lora_hashes(f'"{text}, gone: 0123456789ab"') == [("tiny-style", style.hash),
                                                                  ("gone", "0123456789ab")]
    found, notes = lora.restore_loras(library, [{"name": "renamed", "hash": style.hash, "weight": 0.8},
                                                {"name": "gone", "hash": "0123456789ab"}])
    assert found == [{"name": "tiny-style", "weight": 0.8}]
    assert "found by its hash as 'tiny-style'" in notes[0] and "'gone' (0123456789ab) is missing here" in notes[1]
