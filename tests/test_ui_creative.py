"""The Creative tab's handlers, called as gradio would: final prompt, hires fix, 3x2 plot, Upscale."""

from PIL import Image
from ui_handlers import FakeProgress, component, handler

BASE = ("a {red|blue} fox", "", [], 0.8, ["Anime / 动漫"], 1, 2, 5.0, "Euler", 256, 256)
NO_HIRES = (False, 1.5, "Latent", 0, 0.45)


def test_styles_are_offered_and_the_final_prompt_is_shown(built):
    app, _ = built
    styles = [choice[0] if isinstance(choice, tuple) else choice for choice in component(app, "creative-styles").choices]
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
    gallery, result = plot(*BASE, *NO_HIRES, "prompt_sr", "fox, 猫, dog", "steps", "1,2", "none", "",
                           request=None, progress=progress)
    assert len(gallery) == 7 and gallery[0][1] == "grid"
    grid = Image.open(gallery[0][0])
    assert grid.width > 3 * 256 and grid.height > 2 * 256 and "X/Y/Z plot" in grid.info["kolors_studio"]
    assert [cell["num_inference_steps"] for cell in result["cells"]] == [1, 1, 1, 2, 2, 2]
    assert result["X Values"] == "fox, 猫, dog"
    assert progress.steps[-1] == (6, 6)


def test_upscale_action(built, init_image):
    app, _ = built
    upscale = handler(app, "creative-upscale-run", "click")
    assert upscale(init_image, "Lanczos", 2.0).size == (512, 512)
