"""The creative tools in a real browser: the LoRA picker, <lora:...> in a prompt, hires fix, a style, a 3x2 X/Y
plot and the Upscale action, against `app.py --model tiny --lora-dir ...` on loopback.

Screenshots of the tools go into docs/screenshots/ only with KOLORS_SCREENSHOTS=1.
"""

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import Page, expect

from kolors_app.metadata.png_chunks import read_image_parameters
from page_controls import (RUN_TIMEOUT, assert_no_error_badge, generate, open_tab, open_visitors, prepare, results,
                           set_number, text_box, toast, untranslated)

pytestmark = pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                                reason="/usr/bin/chromium is missing (apt-get install chromium; .ci/run installs it)")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def creative_app(start_app, hf_cache, tmp_path_factory):
    """The app with a LoRA folder holding the tiny LoRAs; its URL."""
    from diffusers import KolorsPipeline
    from gradio_http import stop_process

    from kolors_app.testing import tiny_creative

    folder = tmp_path_factory.mktemp("browser-lora")
    pipe = KolorsPipeline.from_pretrained("Kwai-Kolors/Kolors-diffusers", variant="fp16", dtype=torch.float32)
    tiny_creative.build_lora_folder(pipe, folder)
    process, url, _ = start_app("--lora-dir", str(folder))
    yield url
    stop_process(process)


@pytest.fixture
def visit(browser, creative_app):
    yield from open_visitors(browser, creative_app)


def screenshot(page: Page, name: str) -> None:
    if os.environ.get("KOLORS_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.mouse.move(0, 0)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def open_tools(page: Page, mode: str = "text_to_image") -> None:
    page.locator(f"#{mode}-creative").get_by_text("LoRA, styles, hires fix").click()
    expect(page.locator(f"#{mode}-lora-pick")).to_be_visible()


def choose(page: Page, elem_id: str, typed: str, option: str) -> None:
    """Type into a dropdown's search box and click the option, as a user does."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill("")  # a dropdown shows its value in the search box: "none" + typed would match nothing
    box.press_sequentially(typed, delay=50)
    found = page.get_by_role("option").filter(has_text=option)
    expect(found).to_have_count(1)
    found.first.click()


def infotext(page: Page, mode: str = "text_to_image") -> str:
    return text_box(page, f"{mode}-infotext").input_value()


def shown_bytes(page: Page, image) -> bytes:
    """The file behind an <img> of the page, fetched as the browser's download would."""
    answer = page.request.get(image.get_attribute("src"))
    assert answer.ok and answer.headers["content-type"] == "image/png"
    return answer.body()


def shown_png(page: Page, image) -> Image.Image:
    return Image.open(io.BytesIO(shown_bytes(page, image)))


def test_the_lora_picker_searches_and_writes_tags_that_the_run_records(visit):
    page = visit()
    open_tools(page)
    prepare(page, "text_to_image", "a red fox", seed=3)
    box = page.locator("#text_to_image-lora-pick input").first
    box.click()
    box.press_sequentially("koh", delay=50)
    # The search leaves only what matches.
    expect(page.get_by_role("option")).to_have_text([re.compile(r"tiny-kohya")])
    page.get_by_role("option").filter(has_text="tiny-kohya").click()
    expect(text_box(page, "text_to_image-prompt")).to_have_value("<lora:tiny-kohya:0.8> a red fox")
    set_number(page, "text_to_image-lora-weight", 0.5)
    choose(page, "text_to_image-lora-pick", "tiny-st", "tiny-style")
    prompt = "<lora:tiny-kohya:0.8> <lora:tiny-style:0.5> a red fox"
    expect(text_box(page, "text_to_image-prompt")).to_have_value(prompt)
    generate(page, "text_to_image", 3)
    expect(results(page, "text_to_image")).to_have_count(1)
    text = infotext(page)
    assert text.startswith(prompt) and re.search(r'Lora hashes: "tiny-kohya: [0-9a-f]{12}, tiny-style: [0-9a-f]{12}"',
                                                 text), text
    assert_no_error_badge(page)


def test_a_lora_tag_typed_in_the_prompt_and_a_style_show_the_final_prompt(visit):
    page = visit()
    open_tools(page)
    prepare(page, "text_to_image", "<lora:tiny-style:0.7> a lighthouse", seed=8)
    final = text_box(page, "text_to_image-final-prompt")
    expect(final).to_have_value("a lighthouse")  # the tag never reaches ChatGLM
    choose(page, "text_to_image-styles", "ink", "Ink wash / 水墨")
    expect(final).to_have_value(re.compile(r"a lighthouse.*水墨|水墨.*a lighthouse", re.S))
    generate(page, "text_to_image", 8)
    image = results(page, "text_to_image").first
    expect(image).to_be_visible()
    picture = shown_png(page, image)
    saved = read_image_parameters(picture).parameters
    assert saved["styles"] == ["Ink wash / 水墨"] and saved["prompt"] == "<lora:tiny-style:0.7> a lighthouse"
    # The PNG keeps the styled prompt too (its JSON chunk; the reader leaves the expanded prompts out).
    assert '"final_prompt"' in picture.info["kolors_studio"] and "水墨" in picture.info["kolors_studio"]
    assert saved["loras"][0]["name"] == "tiny-style" and saved["loras"][0]["weight"] == 0.7
    screenshot(page, "creative_lora_style_en_desktop")
    assert_no_error_badge(page)


def test_hires_fix_makes_the_larger_image_and_restores_from_its_png(visit):
    page = visit()
    open_tools(page)
    prepare(page, "text_to_image", "a castle", seed=4)
    page.locator("#text_to_image-hires input[type=checkbox]").check()
    set_number(page, "text_to_image-hires-upscale", 1.5)
    set_number(page, "text_to_image-hires-steps", 3)  # 3 x 0.45: one repainting step at least
    generate(page, "text_to_image", 4)
    image = results(page, "text_to_image").first
    expect(image).to_be_visible()
    picture = shown_png(page, image)
    assert picture.size == (384, 384)
    assert "Hires upscale: 1.5, Hires steps: 3, Hires upscaler: Latent" in infotext(page)
    screenshot(page, "creative_hires_en_desktop")
    # A fresh page: PNG info of that very file restores the hires settings into the tab.
    fresh = visit()
    open_tab(fresh, "PNG info")
    fresh.locator("#png-info-file input[type=file]").set_input_files(
        files=[{"name": "hires.png", "mimeType": "image/png", "buffer": shown_bytes(page, image)}])
    expect(text_box(fresh, "png-info-text")).to_have_value(re.compile("Hires upscale: 1.5"))
    fresh.locator("#png-info-restore").click()
    expect(toast(fresh, "Settings restored into Text to image.")).to_be_visible()
    open_tools(fresh)
    expect(fresh.locator("#text_to_image-hires input[type=checkbox]")).to_be_checked()
    expect(fresh.locator("#text_to_image-hires-steps input[type=number]")).to_have_value("3")
    expect(fresh.locator("#text_to_image-hires-upscale input[type=number]")).to_have_value("1.5")
    assert_no_error_badge(fresh)


def test_a_3x2_plot_shows_the_grid_and_every_cell_is_downloadable(visit):
    page = visit()
    open_tab(page, "Creative")
    text_box(page, "creative-prompt").fill("a fox in the snow")
    set_number(page, "creative-width", 256)
    set_number(page, "creative-height", 256)
    set_number(page, "creative-steps", 2)
    set_number(page, "creative-seed", 11)
    page.locator("#creative-xyz").get_by_text("X/Y/Z plot").click()
    choose(page, "creative-x-type", "prompt", "prompt_sr")
    text_box(page, "creative-x-values").fill("fox, 猫, dog")
    choose(page, "creative-y-type", "steps", "steps")
    text_box(page, "creative-y-values").fill("1,2")
    page.locator("#creative-run-plot").click()
    gallery = page.locator("#creative-gallery .grid-container img")
    expect(gallery).to_have_count(7, timeout=RUN_TIMEOUT)
    expect(page.locator("#creative-gallery img[alt='grid']")).to_be_visible()
    grid = shown_png(page, page.locator("#creative-gallery img[alt='grid']").first)
    assert grid.width > 3 * 256 and grid.height > 2 * 256
    cells = [shown_png(page, gallery.nth(index)) for index in range(1, 7)]
    prompts = [read_image_parameters(cell).parameters["prompt"] for cell in cells]
    assert prompts[:3] == ["a fox in the snow", "a 猫 in the snow", "a dog in the snow"]
    assert [read_image_parameters(cell).parameters["num_inference_steps"] for cell in cells] == [1, 1, 1, 2, 2, 2]
    screenshot(page, "creative_xyz_en_desktop")
    assert_no_error_badge(page)


def test_the_upscale_action_doubles_an_uploaded_image(visit):
    page = visit()
    open_tab(page, "Creative")
    page.locator("#creative-upscale").get_by_text("Upscale an image").click()
    ramp = np.tile(np.linspace(0, 255, 128, dtype=np.uint8), (96, 1))
    buffer = io.BytesIO()
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(buffer, "PNG")
    page.locator("#creative-upscale-source input[type=file]").set_input_files(
        files=[{"name": "small.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    expect(page.locator("#creative-upscale-source img")).to_be_visible()
    page.locator("#creative-upscale-run").click()
    upscaled = page.locator("#creative-upscaled img")
    expect(upscaled).to_be_visible(timeout=RUN_TIMEOUT)
    assert shown_png(page, upscaled.first).size == (256, 192)
    assert_no_error_badge(page)


def test_the_tools_are_in_chinese_on_the_chinese_page(visit):
    page = visit(locale="zh-CN")
    page.locator("#text_to_image-creative").get_by_text("LoRA、风格、高清修复").click()
    expect(page.locator("#text_to_image-lora-pick")).to_be_visible()
    expect(page.locator("#text_to_image-hires")).to_contain_text("启用高清修复")
    page.wait_for_timeout(500)
    assert untranslated(page) == []
    screenshot(page, "creative_tools_zh_desktop")
