"""LoRAs, styles, dynamic prompts and the hires fix through generate(): pixels, metadata, restore."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from diffusers import KolorsImg2ImgPipeline, KolorsPipeline

from kolors_app.core.creative_fields import HiresFix, LoraChoice
from kolors_app.creative import part as creative
from kolors_app.testing import tiny_creative
from kolors_app.engine.generation import generate
from kolors_app.metadata.png_chunks import png_bytes, read_image_parameters
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import GenerationRequest, InitImage
from kolors_app.core.schema import request_from_dict
from kolors_app.models.pipeline_manager import PipelineManager
from test_hires import needs_spandrel

REPO = "Kwai-Kolors/Kolors-diffusers"
SMALL = dict(width=256, height=256, num_inference_steps=3, guidance_scale=5.0)


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def bare_pipe():
    return KolorsPipeline.from_pretrained(REPO, variant="fp16", dtype=torch.float32)


@pytest.fixture(scope="module")
def folders(hf_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("creative")
    pipe = bare_pipe()
    tiny_creative.build_lora_folder(pipe, root / "lora")
    tiny_creative.build_esrgan(root / "upscalers" / "tiny-esrgan-4x.safetensors")
    return root


@pytest.fixture(scope="module")
def own_manager(settings, folders):
    """A manager of its own: LoRAs change the shared U-Net, so the session's manager stays clean."""
    manager = PipelineManager(dataclasses.replace(settings, lora_dir=folders / "lora",
                                                  upscaler_dir=folders / "upscalers"))
    manager.load()
    return manager


def test_lora_tag_matches_bare_diffusers_in_text_and_image_to_image(own_manager, folders, init_image):
    bare = bare_pipe()
    bare.load_lora_weights(folders / "lora" / "tiny-style", adapter_name="style")
    bare.set_adapters(["style"], [0.8])
    result = generate(own_manager, GenerationRequest(prompt="<lora:tiny-style:0.8> a red fox", seed=5, **SMALL))
    expected = bare(prompt="a red fox", negative_prompt="", generator=torch.Generator().manual_seed(5), **SMALL)
    assert np.array_equal(pixels(result.images[0].image), pixels(expected.images[0]))
    saved = result.images[0].parameters
    assert saved["prompt"] == "<lora:tiny-style:0.8> a red fox" and saved["final_prompt"] == "a red fox"
    assert saved["loras"][0]["name"] == "tiny-style" and len(saved["loras"][0]["hash"]) == 12

    request = GenerationRequest(prompt="a painting", seed=7, init=InitImage(init_image, 0.6),
                                loras=[LoraChoice("tiny-style", 0.8)], **SMALL)
    result = generate(own_manager, request)
    expected = KolorsImg2ImgPipeline.from_pipe(bare)(prompt="a painting", negative_prompt="", image=init_image,
                                                     strength=0.6, generator=torch.Generator().manual_seed(7), **SMALL)
    assert np.array_equal(pixels(result.images[0].image), pixels(expected.images[0]))


def test_no_lora_after_a_lora_is_the_base_model_again(own_manager, manager):
    request = GenerationRequest(prompt="a blue bird", seed=9, **SMALL)
    generate(own_manager, dataclasses.replace(request, loras=[LoraChoice("tiny-kohya", 1.0)]))
    mine = generate(own_manager, request).images[0].image
    assert np.array_equal(pixels(mine), pixels(generate(manager, request).images[0].image))


def test_unknown_or_foreign_lora_is_refused_with_its_field(own_manager):
    with pytest.raises(ValidationError, match="loras: unknown LoRA 'missing'"):
        generate(own_manager, GenerationRequest(prompt="<lora:missing:1> a cat", seed=1, **SMALL))
    with pytest.raises(ValidationError, match="loras: 'sd15-style'"):
        generate(own_manager, GenerationRequest(prompt="a cat", seed=1, loras=[LoraChoice("sd15-style")], **SMALL))


def groups(count: int) -> str:
    return " ".join(f"{{red {i}|blue {i}}}" for i in range(count))


def test_dynamic_prompts_take_64_groups_and_refuse_65_naming_the_prompt_that_has_them(own_manager):
    from kolors_app.creative.styles import Style

    result = generate(own_manager, GenerationRequest(prompt=groups(64), negative_prompt=groups(64), seed=4, **SMALL))
    final = result.images[0].parameters
    assert "{" not in final["final_prompt"] and "{" not in final["final_negative_prompt"]
    for field_name in ("prompt", "negative_prompt"):
        request = GenerationRequest(**{"prompt": "a fox", field_name: groups(65)}, seed=4, **SMALL)
        with pytest.raises(ValidationError, match=f"^{field_name}: has more than 64") as refused:
            generate(own_manager, request)
        assert refused.value.code == "too_many" and refused.value.allowed == {"max_items": 64}
    # A style adds its groups after validation: the draw itself names the field too.
    table = {"many": Style("many", prompt="{prompt}", negative_prompt=groups(40))}
    request = GenerationRequest(prompt="a fox", negative_prompt=groups(30), styles=["many"], seed=4, **SMALL)
    with pytest.raises(ValidationError, match="^negative_prompt: has more than 64"):
        creative.final_prompts(request, [4], table)
    assert creative.final_prompts(dataclasses.replace(request, negative_prompt=groups(24)), [4], table)


def test_styles_and_dynamic_prompts_are_recorded_per_image(own_manager):
    request = GenerationRequest(prompt="a {red|blue|green|yellow} fox", seed=100, num_images=4,
                                styles=["Ink wash / 水墨"], **SMALL)
    result = generate(own_manager, request)
    finals = [image.parameters["final_prompt"] for image in result.images]
    assert all("水墨" in final and "{" not in final for final in finals)
    assert len(set(finals)) > 1
    again = generate(own_manager, dataclasses.replace(request, seed=102, num_images=1))
    # Image 2 of the batch had seed 102: the same seed draws the same choice and makes the same image.
    assert again.images[0].parameters["final_prompt"] == finals[2]
    # A batch of four and a single image round differently in the U-Net, by a level or two at most.
    assert np.abs(pixels(again.images[0].image) - pixels(result.images[2].image)).max() <= 3
    assert result.images[0].parameters["styles"] == ["Ink wash / 水墨"]
    with pytest.raises(ValidationError, match="styles: unknown style 'nope'"):
        generate(own_manager, dataclasses.replace(request, styles=["nope"]))


@pytest.mark.parametrize("upscaler", ["Latent", pytest.param("tiny-esrgan-4x", marks=needs_spandrel)])
def test_hires_fix_through_generate_and_back_from_the_png(own_manager, upscaler):
    hires = HiresFix(upscale=1.5, upscaler=upscaler, steps=4, denoising_strength=0.5)
    result = generate(own_manager, GenerationRequest(prompt="a lighthouse", seed=3, hires=hires, **SMALL))
    image = result.images[0]
    assert image.image.size == (384, 384)
    text = read_image_parameters(png_bytes(image.image, image.parameters))
    assert text.parameters["hires_upscaler"] == upscaler
    restored = request_from_dict(text.parameters)
    assert restored.hires == hires and restored.width == 256
    # The A1111 text alone restores it as well.
    from kolors_app.metadata.infotext import format_parameters, parse_parameters

    line = format_parameters(image.parameters)
    assert f"Hires upscale: 1.5, Hires steps: 4, Hires upscaler: {upscaler}, Denoising strength: 0.5" in line
    assert parse_parameters(line).parameters["hires_upscale"] == 1.5
    assert not parse_parameters(line).warnings


def test_hires_fix_is_refused_beyond_the_size_limit_and_for_init_images(own_manager, init_image):
    with pytest.raises(ValidationError, match="hires_upscale: 4x of 1024x1024"):
        generate(own_manager, GenerationRequest(prompt="a", seed=1, width=1024, height=1024, hires=HiresFix(upscale=4)))
    with pytest.raises(ValidationError, match="hires_upscaler: unknown upscaler 'nope'"):
        generate(own_manager, GenerationRequest(prompt="a", seed=1, hires=HiresFix(upscaler="nope"), **SMALL))
    with pytest.raises(ValidationError, match="hires: the hires fix applies to text-to-image"):
        generate(own_manager, GenerationRequest(prompt="a", seed=1, init=InitImage(init_image, 0.5),
                                                hires=HiresFix(upscale=1.5), **SMALL))


def test_lora_hashes_in_the_png_and_restore_notes(own_manager):
    result = generate(own_manager, GenerationRequest(prompt="a cat", seed=2, loras=[LoraChoice("tiny-kohya", 0.7)],
                                                     **SMALL))
    params = result.images[0].parameters
    from kolors_app.metadata.infotext import format_parameters, parse_parameters

    line = format_parameters(params)
    short = params["loras"][0]["hash"]
    assert f"Lora hashes: \"tiny-kohya: {short}\"" in line and "<lora:tiny-kohya:0.7>" in line
    parsed = parse_parameters(line).parameters
    assert parsed["loras"] == [{"name": "tiny-kohya", "weight": 0.7, "hash": short}]
    restored, notes = creative.restore_notes(own_manager, {**parsed, "loras": parsed["loras"] + [
        {"name": "elsewhere", "weight": 1.0, "hash": "0123456789ab"}]})
    assert restored["loras"] == [{"name": "tiny-kohya", "weight": 0.7}]
    assert notes == ["LoRA 'elsewhere' (0123456789ab) is missing here"]


@pytest.mark.parametrize("model", ["inpainting", "base"])
def test_lora_with_inpainting_matches_bare_diffusers(own_manager, folders, init_image, model):
    from diffusers import StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from PIL import ImageDraw

    from kolors_app.core.request import Inpaint

    mask = Image.new("L", (256, 256))
    ImageDraw.Draw(mask).rectangle([64, 64, 191, 191], fill=255)
    request = GenerationRequest(prompt="<lora:tiny-style:0.8> a cat", seed=9, init=InitImage(init_image, 0.999),
                                inpaint=Inpaint(mask, mask_blur=0, model=model), **SMALL)
    result = pixels(generate(own_manager, request).images[0].image)
    plain = pixels(generate(own_manager, dataclasses.replace(request, prompt="a cat")).images[0].image)

    base = bare_pipe()
    unet = (UNet2DConditionModel.from_pretrained("Kwai-Kolors/Kolors-Inpainting", subfolder="unet", variant="fp16",
                                                 torch_dtype=torch.float32) if model == "inpainting" else base.unet)
    embeds = dict(zip(("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                       "negative_pooled_prompt_embeds"),
                      base.encode_prompt("a cat", device="cpu", num_images_per_prompt=1,
                                         do_classifier_free_guidance=True, negative_prompt="")))
    bare = StableDiffusionXLInpaintPipeline(vae=base.vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                            tokenizer_2=None, unet=unet, scheduler=base.scheduler,
                                            add_watermarker=False)
    bare.load_lora_weights(folders / "lora" / "tiny-style", adapter_name="style")
    bare.set_adapters(["style"], [0.8])
    expected = pixels(bare(**embeds, image=init_image, mask_image=mask, strength=0.999,
                           generator=torch.Generator("cpu").manual_seed(9), **SMALL).images[0])
    inside = pixels(mask) > 0
    # The app pastes the unmasked pixels back exactly; inside, its blend rounds like the inpainting test's (<= 1).
    assert np.abs(result[inside] - expected[inside]).max() <= 1
    assert np.array_equal(result[~inside], pixels(init_image)[~inside])
    assert np.abs(result[inside] - plain[inside]).max() > 8  # the LoRA did change the repainted area
