"""ControlNet, inpainting and outpainting on the tiny models, against references built from diffusers' own classes."""

import numpy as np
import pytest
import torch
from diffusers import (ControlNetModel, KolorsPipeline, StableDiffusionXLControlNetPipeline,
                       StableDiffusionXLInpaintPipeline, UNet2DConditionModel)
from PIL import Image, ImageDraw, ImageFilter

from kolors_app.engine.generation import generate
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import ControlUnit, GenerationRequest, InitImage, Inpaint, Reference
from kolors_app.models.pipeline_manager import PipelineKey
from kolors_app.control.preprocessors import canny_map

REPO = "Kwai-Kolors/Kolors-diffusers"
CANNY_REPO = "Kwai-Kolors/Kolors-ControlNet-Canny"
INPAINTING_REPO = "Kwai-Kolors/Kolors-Inpainting"
SMALL = dict(width=256, height=256, num_inference_steps=3, guidance_scale=5.0)


def pixels(image):
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def picture():
    """A shape with clear edges, for canny, depth and pose."""
    image = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([60, 60, 200, 200], fill="black")
    draw.ellipse([90, 90, 170, 170], fill=(200, 30, 30))
    return image


@pytest.fixture(scope="module")
def mask():
    image = Image.new("L", (256, 256))
    ImageDraw.Draw(image).rectangle([64, 64, 191, 191], fill=255)
    return image


@pytest.fixture(scope="module")
def reference_parts(hf_cache):
    """Base Kolors and embeddings, loaded in the test from the Hub layout, not through the app."""
    base = KolorsPipeline.from_pretrained(REPO, variant="fp16", dtype=torch.float32)
    base.set_progress_bar_config(disable=True)
    prompt_embeds, negative, pooled, negative_pooled = base.encode_prompt(
        "a cat", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt="")
    embeds = dict(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative, pooled_prompt_embeds=pooled,
                  negative_pooled_prompt_embeds=negative_pooled)
    return base, embeds


def projected(controlnet):
    """Apply a plain ControlNetModel's encoder_hid_proj to the text embeddings with a hook, like Kolors' ControlNet."""
    def project(module, args, kwargs):
        kwargs["encoder_hidden_states"] = module.encoder_hid_proj(kwargs["encoder_hidden_states"])
        return args, kwargs

    controlnet.register_forward_pre_hook(project, with_kwargs=True)
    return controlnet


def test_controlnet_matches_a_reference_from_diffusers_classes(manager, reference_parts, picture):
    base, embeds = reference_parts
    unit = ControlUnit("canny", picture, scale=0.7, start=0.0, end=0.9)
    result = generate(manager, GenerationRequest(prompt="a cat", seed=5, controls=[unit], **SMALL))

    controlnet = projected(ControlNetModel.from_pretrained(CANNY_REPO, torch_dtype=torch.float32))
    pipe = StableDiffusionXLControlNetPipeline(vae=base.vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                               tokenizer_2=None, unet=base.unet, controlnet=controlnet,
                                               scheduler=base.scheduler, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(**embeds, image=canny_map(picture, 100, 200), controlnet_conditioning_scale=0.7,
                    control_guidance_start=0.0, control_guidance_end=0.9,
                    generator=torch.Generator("cpu").manual_seed(5), **SMALL).images[0]
    assert np.abs(pixels(result.images[0].image) - pixels(expected)).max() <= 1
    assert np.array_equal(pixels(result.control_maps[0]), pixels(canny_map(picture)))
    assert result.images[0].parameters["control_type"] == "canny"


def test_scale_zero_equals_no_unit_and_each_unit_changes_the_image(manager, picture, init_image):
    plain = generate(manager, GenerationRequest(prompt="a cat", seed=5, **SMALL)).images[0].image
    off = GenerationRequest(prompt="a cat", seed=5, controls=[ControlUnit("canny", picture, scale=0)], **SMALL)
    zero = generate(manager, off).images[0].image
    assert np.array_equal(pixels(plain), pixels(zero))
    outputs = {}
    for kind in ("canny", "depth", "pose"):
        result = generate(manager, GenerationRequest(prompt="a cat", seed=5, controls=[ControlUnit(kind, picture)],
                                                     **SMALL))
        outputs[kind] = pixels(result.images[0].image)
        assert not np.array_equal(outputs[kind], pixels(plain)), kind
        assert result.control_maps[0].size == (256, 256)
    two = generate(manager, GenerationRequest(prompt="a cat", seed=5, controls=[
        ControlUnit("depth", picture), ControlUnit("pose", picture)], **SMALL)).images[0].image
    assert not np.array_equal(pixels(two), outputs["depth"]) and not np.array_equal(pixels(two), outputs["pose"])
    # With image-to-image and with IP-Adapter too (end 1.0: image-to-image at 0.6 runs one step, which 0.9 skips).
    for parts in ({"init": InitImage(init_image, 0.6)}, {"reference": Reference(Image.new("RGB", (64, 64), "red"))}):
        without = generate(manager, GenerationRequest(prompt="a cat", seed=5, **parts, **SMALL)).images[0].image
        with_unit = generate(manager, GenerationRequest(prompt="a cat", seed=5, controls=[
            ControlUnit("canny", picture, end=1.0)], **parts, **SMALL)).images[0].image
        assert not np.array_equal(pixels(without), pixels(with_unit))


def test_an_already_made_map_is_used_as_it_is(manager, picture):
    request = GenerationRequest(prompt="a cat", seed=5, controls=[ControlUnit("canny", picture)], **SMALL)
    made = generate(manager, request)
    again = generate(manager, GenerationRequest(prompt="a cat", seed=5, controls=[
        ControlUnit("canny", made.control_maps[0], preprocess=False)], **SMALL))
    assert np.array_equal(pixels(made.images[0].image), pixels(again.images[0].image))


def test_no_weight_is_loaded_twice(manager, picture, mask, init_image):
    base = manager.pipeline()
    generate(manager, GenerationRequest(prompt="a cat", seed=5, controls=[ControlUnit("canny", picture)], **SMALL))
    cn = manager.pipeline(PipelineKey(controls=("canny",)))
    inpaint = manager.pipeline(PipelineKey("mask", controls=("canny", "depth"), inpainting_unet=True))
    for name in ("vae", "text_encoder"):
        pointers = {next(getattr(pipe, name).parameters()).data_ptr() for pipe in (base, cn, inpaint)}
        assert len(pointers) == 1, name
    assert cn.unet is base.unet and inpaint.unet is manager.inpainting_unet()
    assert inpaint.unet.config.in_channels == 9 and cn.text_encoder_2 is None
    assert cn.controlnet is inpaint.controlnet.nets[0]
    assert manager.controlnets.loads == len(manager.controlnets.loaded())


def test_inpainting_matches_a_reference_and_keeps_the_outside_exactly(manager, reference_parts, init_image, mask):
    base, embeds = reference_parts
    request = GenerationRequest(prompt="a cat", seed=9, init=InitImage(init_image, 0.999),
                                inpaint=Inpaint(mask, mask_blur=0), **SMALL)
    result = generate(manager, request).images[0].image

    unet = UNet2DConditionModel.from_pretrained(INPAINTING_REPO, subfolder="unet", variant="fp16",
                                                torch_dtype=torch.float32)
    pipe = StableDiffusionXLInpaintPipeline(vae=base.vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                            tokenizer_2=None, unet=unet, scheduler=base.scheduler,
                                            add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(**embeds, image=init_image, mask_image=mask, strength=0.999,
                    generator=torch.Generator("cpu").manual_seed(9), **SMALL).images[0]
    inside = pixels(mask) > 0
    assert np.abs(pixels(result)[inside] - pixels(expected)[inside]).max() <= 1
    assert np.array_equal(pixels(result)[~inside], pixels(init_image)[~inside])
    assert not np.array_equal(pixels(result)[inside], pixels(init_image)[inside])


@pytest.mark.parametrize("model, area", [("inpainting", "masked"), ("base", "whole"), ("base", "masked")])
def test_every_inpainting_variant_keeps_the_unmasked_pixels(manager, init_image, mask, model, area):
    request = GenerationRequest(prompt="a cat", seed=9, init=InitImage(init_image, 0.999),
                                inpaint=Inpaint(mask, mask_blur=4, area=area, model=model), **SMALL)
    result = generate(manager, request).images[0]
    untouched = np.asarray(mask.filter(ImageFilter.GaussianBlur(4))) == 0
    assert np.array_equal(pixels(result.image)[untouched], pixels(init_image)[untouched])
    assert result.parameters["inpaint_model"] == model and result.parameters["inpaint_area"] == area
    if area == "masked":
        return  # diffusers pastes the crop back over the original itself: the outside is kept either way
    loose = generate(manager, GenerationRequest(prompt="a cat", seed=9, init=InitImage(init_image, 0.999),
                                                inpaint=Inpaint(mask, area=area, model=model, keep_unmasked=False),
                                                **SMALL)).images[0].image
    assert not np.array_equal(pixels(loose)[untouched], pixels(init_image)[untouched])


def test_outpainting_extends_the_canvas_with_a_control_unit(manager, init_image, picture):
    request = GenerationRequest(prompt="a cat", seed=9, init=InitImage(init_image, 0.999),
                                inpaint=Inpaint(outpaint=(64, 0, 0, 32), mask_blur=0),
                                controls=[ControlUnit("canny", picture)], **SMALL)
    result = generate(manager, request).images[0]
    assert result.image.size == (320, 288)
    assert np.array_equal(pixels(result.image)[:256, 64:], pixels(init_image))
    assert result.parameters["outpaint_left"] == 64 and result.parameters["outpaint_down"] == 32


def test_bad_control_and_mask_inputs_are_named_before_model_work(manager, init_image):
    black = Image.new("L", (256, 256))
    with pytest.raises(ValidationError) as error:
        generate(manager, GenerationRequest(prompt="x", init=InitImage(init_image), inpaint=Inpaint(black), **SMALL))
    assert error.value.field == "mask"
    with pytest.raises(ValidationError) as error:
        generate(manager, GenerationRequest(prompt="x", controls=[ControlUnit("canny", None)], **SMALL))
    assert error.value.field == "control_image"
    with pytest.raises(ValidationError) as error:
        generate(manager, GenerationRequest(prompt="x", init=InitImage(init_image), inpaint=Inpaint(black),
                                            reference=Reference(init_image), **SMALL))
    assert error.value.field in ("inpaint_model", "mask")
