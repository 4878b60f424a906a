"""The Creative tab's handlers, called as gradio would: final prompt, hires fix, 3x2 plot, Upscale."""

import asyncio
import dataclasses
import inspect

import gradio as gr
import pytest
import torch
from PIL import Image
from ui_handlers import SMALL, FakeProgress, by_id, component, final, handler

REPO = "Kwai-Kolors/Kolors-diffusers"

BASE = ("a {red|blue} fox", "", [], 0.8, ["Anime / 动漫"], 1, 2, 5.0, "Euler", 256, 256)
NO_HIRES = (False, 1.5, "Latent", 0, 0.45)


def test_styles_are_offered_and_the_final_prompt_is_shown(built):
    app, _ = built
    choices = component(app, "creative-styles").choices
    styles = [choice[0] if isinstance(choice, tuple) else choice for choice in choices]
    assert "Ink wash / 水墨" in styles
    show = handler(app, "creative-prompt", "change")
    text = show("<lora:x:0.5> a {red|blue} fox", "", ["Ink wash / 水墨"], 3)
    assert "水墨" in text and "{" not in text and "<lora" not in text


def test_hires_fix_from_the_tab(built):
    app, _ = built
    run = handler(app, "creative-generate", "click")
    outputs = list(run(*BASE, True, 1.5, "Latent", 2, 0.5, request=None, progress=FakeProgress()))
    gallery, result = outputs[-1]
    assert Image.open(gallery[0][0]).size == (384, 384)
    assert result["images"][0]["hires_upscale"] == 1.5 and result["images"][0]["width"] == 256


def test_a_3x2_plot_gives_the_grid_and_every_cell(built):
    app, _ = built
    plot = handler(app, "creative-run-plot", "click")
    progress = FakeProgress()
    outputs = list(plot(*BASE, *NO_HIRES, "prompt_sr", "fox, 猫, dog", "steps", "1,2", "none", "",
                        request=None, progress=progress))
    gallery, result = outputs[-1]
    assert len(gallery) == 7 and gallery[0][1] == "grid"
    grid = Image.open(gallery[0][0])
    assert grid.width > 3 * 256 and grid.height > 2 * 256 and "X/Y/Z plot" in grid.info["kolors_studio"]
    assert [cell["num_inference_steps"] for cell in result["cells"]] == [1, 1, 1, 2, 2, 2]
    assert result["X Values"] == "fox, 猫, dog"
    assert progress.steps[-1] == (6, 6)
    assert all(update == (gr.skip(), gr.skip()) for update in outputs[:-1])  # progress only, until the grid


def test_upscale_action(built, init_image):
    app, _ = built
    upscale = handler(app, "creative-upscale-run", "click")
    assert upscale(init_image, "Lanczos", 2.0, None).size == (512, 512)


# --- The LoRA, styles and hires-fix accordion of the generation tabs ---

@pytest.fixture(scope="module")
def lora_app(settings, hf_cache, upload_dir, tmp_path_factory):
    """The whole UI on a manager whose LoRA folder holds the tiny LoRAs: (app, ctx)."""
    from diffusers import KolorsPipeline

    from kolors_app.testing import tiny_creative
    from kolors_app.models.pipeline_manager import PipelineManager
    from kolors_app.launch import build

    folder = tmp_path_factory.mktemp("ui-lora")
    tiny_creative.build_lora_folder(KolorsPipeline.from_pretrained(REPO, variant="fp16", dtype=torch.float32), folder)
    own = dataclasses.replace(settings, lora_dir=folder)
    manager = PipelineManager(own)
    manager.load()
    return build(own, manager)


def test_every_generation_tab_has_the_accordion(lora_app):
    app, _ = lora_app
    for mode in ("text_to_image", "image_to_image", "ip_adapter", "inpaint"):
        assert "tiny-style" in [choice[1] for choice in component(app, f"{mode}-lora-pick").choices]
        assert "Ink wash / 水墨" in [choice[1] for choice in component(app, f"{mode}-styles").choices]
        component(app, f"{mode}-final-prompt")
    component(app, "text_to_image-hires-upscale")
    slider = component(app, "ip_adapter-hires-upscale")
    assert (slider.minimum, slider.maximum) == (1.25, 2.0)
    # Image-to-image has no hires fix (the Upscale action repaints an existing image).
    for mode in ("image_to_image", "inpaint"):
        assert not [b for b in app.blocks.values() if getattr(b, "elem_id", None) == f"{mode}-hires"]


def test_picking_loras_writes_tags_with_their_weights(lora_app):
    app, _ = lora_app
    pick = handler(app, "text_to_image-lora-pick", "input")
    prompt, cleared = pick("a red fox", "tiny-style", 0.8)
    assert prompt == "<lora:tiny-style:0.8> a red fox" and cleared is None
    prompt, _ = pick(prompt, "tiny-kohya", -0.5)
    assert prompt == "<lora:tiny-style:0.8> <lora:tiny-kohya:-0.5> a red fox"
    # Picking one again changes its weight, once.
    assert pick(prompt, "tiny-style", 1.2)[0] == "<lora:tiny-kohya:-0.5> <lora:tiny-style:1.2> a red fox"
    show = handler(app, "text_to_image-styles", "change")
    final_text = show(prompt, "blurry", ["Ink wash / 水墨"], 1)
    assert "水墨" in final_text and "<lora" not in final_text and "[negative]" in final_text


def test_styles_hires_and_loras_from_a_generation_tab_are_recorded_and_restored(lora_app):
    app, _ = lora_app
    text_to_image = app.studio_tabs["text_to_image"].handler
    outputs = list(text_to_image("<lora:tiny-style:0.7> a red fox", "", 256, 256, 2, 5.0, "Euler", 3, 1,
                                 styles=["Ink wash / 水墨"], hires_fix=True, hires_upscaler="Latent", hires_upscale=1.5,
                                 hires_steps=2, hires_denoising_strength=0.5, request=None, progress=None))
    gallery, result = final(outputs)
    saved = result["images"][0]
    assert Image.open(gallery[0][0]).size == (384, 384)
    assert saved["styles"] == ["Ink wash / 水墨"] and "水墨" in saved["final_prompt"]
    assert saved["hires_upscale"] == 1.5 and saved["hires_steps"] == 2 and saved["loras"][0]["name"] == "tiny-style"

    restore = handler(app, "png-info-restore", "click")
    updates = by_id(restore(dict(saved, prompt="a red fox")))  # a LoRA saved in "loras" but not in the prompt
    assert updates["text_to_image-styles"] == ["Ink wash / 水墨"] and updates["text_to_image-hires"] is True
    assert updates["text_to_image-hires-upscale"] == 1.5 and updates["text_to_image-hires-steps"] == 2
    assert updates["text_to_image-prompt"] == "<lora:tiny-style:0.7> a red fox"

    warnings = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gr, "Warning", lambda message, **_: warnings.append(message))
        updates = by_id(restore(dict(saved, loras=[{"name": "gone", "weight": 1.0, "hash": "0123456789ab"}])))
    assert "'gone' (0123456789ab) is missing here" in warnings[0]
    assert updates["text_to_image-hires"] is True


def test_a_generation_tab_without_the_accordion_values_runs_plain(lora_app):
    app, _ = lora_app
    text_to_image = app.studio_tabs["text_to_image"].handler
    _, result = final(list(text_to_image("a red fox", "", num_inference_steps=1, seed=1, num_images=1, request=None,
                                         progress=None, **SMALL)))
    saved = result["images"][0]
    assert "styles" not in saved and "hires_upscale" not in saved and saved["width"] == 256


def test_the_program_endpoint_takes_styles_and_hires_fields(lora_app):
    app, _ = lora_app
    endpoint = handler(app, "text_to_image-api", "click")
    assert "hires_denoising_strength" in inspect.signature(endpoint).parameters
    assert "hires_fix: true for A1111's hires fix" in endpoint.__doc__
    hires = dict(hires_fix=True, hires_upscaler="Lanczos", hires_upscale=1.25, hires_steps=3,
                 hires_denoising_strength=0.4)
    gallery, result = asyncio.run(endpoint("a boat", None, 256, 256, 2, 5.0, "Euler", 4, 1, styles=["Anime / 动漫"],
                                           **hires))
    saved = result["images"][0]
    assert saved["hires_upscaler"] == "Lanczos" and saved["styles"] == ["Anime / 动漫"]
    assert Image.open(gallery[0][0]).size == (320, 320)
    with pytest.raises(gr.Error, match="hires"):
        asyncio.run(endpoint("a boat", None, 256, 256, 2, 5.0, "Euler", 4, 1, **dict(hires, hires_upscale=9.0)))


def test_a_plot_over_the_work_budget_is_refused_naming_the_axis(built):
    app, _ = built
    plot = handler(app, "creative-run-plot", "click")
    big = ("a fox", "", [], 0.8, [], 1, 100, 5.0, "Euler", 1024, 1024)
    with pytest.raises(gr.Error, match="x_values: this job is 3,264 megapixel-steps") as caught:
        list(plot(*big, *NO_HIRES, "seed", "1-32", "none", "", "none", "", request=None, progress=FakeProgress()))
    assert "at most 2,600 allowed" in str(caught.value)
