"""The app in a real browser: Debian's Chromium (playwright) against `app.py --model tiny` on loopback.

Each test is a new visitor (a fresh browser context). Sizes are 256 px and runs 1-4 steps, so every
generation on the tiny model takes a second or two. The tests also save the README's screenshots.
"""

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from kolors_app.metadata import read_image_parameters
from page_controls import set_number, text_box

pytestmark = pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                                reason="/usr/bin/chromium is missing (apt-get install chromium; .ci/run installs it)")

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
RUN_TIMEOUT = 90_000  # ms; a 2-step 256 px run takes about a second, more on a busy CI machine


# --- Driving the controls ---


def open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    expect(page.get_by_role("tab", selected=True)).to_have_text(name)


def prepare(page: Page, mode: str, prompt: str, *, steps: int = 2, seed: int = -1, images: int = 1) -> None:
    """Fill a generation tab for a quick tiny run: 256x256, a few steps."""
    text_box(page, f"{mode}-prompt").fill(prompt)
    set_number(page, f"{mode}-width", 256)
    set_number(page, f"{mode}-height", 256)
    set_number(page, f"{mode}-steps", steps)
    set_number(page, f"{mode}-seed", seed)
    set_number(page, f"{mode}-num-images", images)


def results(page: Page, mode: str):
    """The final images in a tab's gallery (live previews are captioned 'preview, step n' instead)."""
    return page.locator(f"#{mode}-gallery .grid-container img[alt^='seed ']")


def generate(page: Page, mode: str, *seeds: int) -> None:
    """Click Generate and wait for the gallery to show an image captioned with each seed."""
    page.locator(f"#{mode}-generate").click()
    for seed in seeds:
        page.locator(f"#{mode}-gallery img[alt='seed {seed}']").first.wait_for(timeout=RUN_TIMEOUT)


def select_image(page: Page, mode: str, index: int, count: int) -> None:
    """Click a gallery thumbnail (opens the large view and shows that image's parameters)."""
    page.locator(f"#{mode}-gallery").get_by_role("button", name=f"Thumbnail {index + 1} of {count}").first.click()


def parameters_shown(page: Page, elem_id: str):
    return expect(page.locator(f"#{elem_id}"))


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.mouse.move(0, 0)  # no hover highlight or focus ring in the picture
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


# --- Generating and the controls ---


def test_text_to_image_gallery_pngs_keep_their_metadata_and_settings_restore(page, tmp_path):
    prompt = "一只红色的狐狸坐在雪地里, a red fox in the snow"
    prepare(page, "text_to_image", prompt, seed=1234, images=2)
    text_box(page, "text_to_image-negative").fill("blurry")
    expect(page.locator("#text_to_image-tokens")).to_have_text(re.compile(r"\b[1-9]\d* / 256"))
    generate(page, "text_to_image", 1234, 1235)
    expect(results(page, "text_to_image")).to_have_count(2)

    select_image(page, "text_to_image", 1, 2)
    parameters_shown(page, "text_to_image-selected").to_contain_text("1235")
    parameters_shown(page, "text_to_image-selected").to_contain_text("a red fox in the snow")
    screenshot(page, "text_to_image")

    # The gallery's own Download button gives the PNG with its parameters inside.
    with page.expect_download() as download:
        page.locator("#text_to_image-gallery").get_by_role("button", name="Download", exact=True).first.click()
    saved = tmp_path / "download.png"
    download.value.save_as(saved)
    found = read_image_parameters(saved)
    assert saved.read_bytes()[:4] == b"\x89PNG"
    assert found.parameters["seed"] == 1235 and found.parameters["prompt"] == prompt
    assert found.parameters["negative_prompt"] == "blurry" and found.parameters["num_inference_steps"] == 2
    assert "Seed: 1235" in found.text

    # Change everything, then "Use these settings" puts the selected image's settings back.
    text_box(page, "text_to_image-prompt").fill("something else")
    set_number(page, "text_to_image-steps", 9)
    set_number(page, "text_to_image-seed", 5)
    page.locator("#text_to_image-use-settings").click()
    expect(text_box(page, "text_to_image-prompt")).to_have_value(prompt)
    expect(page.locator("#text_to_image-steps input[type=number]")).to_have_value("2")
    expect(page.locator("#text_to_image-seed input")).to_have_value("1235")
    expect(text_box(page, "text_to_image-negative")).to_have_value("blurry")


def test_token_count_presets_samplers_and_examples(page):
    tokens = page.locator("#text_to_image-tokens")
    expect(tokens).to_have_text(re.compile(r"\b0 / 256"))
    text_box(page, "text_to_image-prompt").fill("a red fox")
    expect(tokens).to_have_text(re.compile(r"\b[1-9]\d? / 256"))
    text_box(page, "text_to_image-prompt").fill("a red fox in the snow, " * 60)
    expect(tokens).to_contain_text("only the first 256 are used")

    for preset, size in {"16:9": ("1344", "768"), "3:4": ("896", "1152"), "1:1": ("1024", "1024")}.items():
        page.locator("#text_to_image-aspect").get_by_text(preset, exact=True).click()
        expect(page.locator("#text_to_image-width input[type=number]")).to_have_value(size[0])
        expect(page.locator("#text_to_image-height input[type=number]")).to_have_value(size[1])
    set_number(page, "text_to_image-width", 512)
    expect(page.locator("#text_to_image-aspect input:checked")).to_have_value("Custom")

    for sampler, (steps, guidance) in {"DPM++ 2M Karras": ("25", "6.5"), "Euler": ("50", "5")}.items():
        page.locator("#text_to_image-scheduler input").click()
        page.get_by_role("option", name=sampler, exact=True).click()
        expect(page.locator("#text_to_image-steps input[type=number]")).to_have_value(steps)
        expect(page.locator("#text_to_image-guidance input[type=number]")).to_have_value(guidance)

    row = page.locator("#text_to_image-examples tbody tr").nth(1)
    example = row.locator("td").nth(1).inner_text().strip().rstrip(".…")
    row.click()
    expect(text_box(page, "text_to_image-prompt")).to_have_value(re.compile("^" + re.escape(example)))
    expect(text_box(page, "text_to_image-negative")).not_to_have_value("")


def test_seed_random_and_reuse_last(page):
    prepare(page, "text_to_image", "a lighthouse", steps=1, seed=-1)
    page.locator("#text_to_image-generate").click()
    results(page, "text_to_image").first.wait_for(timeout=RUN_TIMEOUT)
    first = int(results(page, "text_to_image").first.get_attribute("alt").split()[1])

    page.locator("#text_to_image-generate").click()
    page.locator(f"#text_to_image-gallery .grid-container img[alt^='seed ']:not([alt='seed {first}'])").wait_for(
        timeout=RUN_TIMEOUT)
    second = int(results(page, "text_to_image").first.get_attribute("alt").split()[1])
    assert second != first, "seed -1 must draw a new random seed for every run"

    page.locator("#text_to_image-reuse-seed").click()
    expect(page.locator("#text_to_image-seed input")).to_have_value(str(second))
    page.locator("#text_to_image-random-seed").click()
    expect(page.locator("#text_to_image-seed input")).to_have_value("-1")


def test_live_preview_then_stop_ends_the_run_and_the_next_run_works(page):
    # 150 steps: previews every 30 steps, and many seconds of run left to stop even on a fast machine.
    prepare(page, "text_to_image", "a long run", steps=150, seed=99)
    started = time.monotonic()
    page.locator("#text_to_image-generate").click()
    page.locator("#text_to_image-gallery img[alt^='preview, step']").first.wait_for(timeout=RUN_TIMEOUT)
    thirty_steps = time.monotonic() - started
    assert results(page, "text_to_image").count() == 0

    page.locator("#text_to_image-stop").click()
    # The event ends at once (its progress display goes away) and no final image ever arrives.
    expect(page.locator("#text_to_image-gallery [data-testid=status-tracker]")).to_have_class(
        re.compile(r"\bhide\b"), timeout=10_000)
    page.wait_for_timeout(2_000)  # the only fixed wait: proving that something does NOT appear
    expect(results(page, "text_to_image")).to_have_count(0)

    # The model is free again: had the stopped run gone on, this one would wait for its 120 steps left
    # (four times as long as its first 30 took).
    set_number(page, "text_to_image-steps", 2)
    set_number(page, "text_to_image-seed", 100)
    started = time.monotonic()
    generate(page, "text_to_image", 100)
    assert time.monotonic() - started < 2 * thirty_steps + 3
    expect(results(page, "text_to_image")).to_have_count(1)


def test_send_to_image_to_image_and_ip_adapter_and_generate_there(page):
    prepare(page, "text_to_image", "a red fox", seed=11)
    generate(page, "text_to_image", 11)

    page.locator("#text_to_image-send-i2i").click()
    expect(page.get_by_role("tab", selected=True)).to_have_text("Image to image")
    expect(page.locator("#image_to_image-image img")).to_have_count(1)
    prepare(page, "image_to_image", "an oil painting of a fox", steps=4, seed=21)
    set_number(page, "image_to_image-strength", 0.5)
    generate(page, "image_to_image", 21)
    select_image(page, "image_to_image", 0, 1)
    parameters_shown(page, "image_to_image-selected").to_contain_text("image_to_image")
    screenshot(page, "image_to_image")

    open_tab(page, "Text to image")
    page.locator("#text_to_image-send-ip").click()
    expect(page.get_by_role("tab", selected=True)).to_have_text("IP-Adapter")
    expect(page.locator("#ip_adapter-reference img")).to_have_count(1)
    prepare(page, "ip_adapter", "in the style of the reference", steps=2, seed=31)
    generate(page, "ip_adapter", 31)
    select_image(page, "ip_adapter", 0, 1)
    parameters_shown(page, "ip_adapter-selected").to_contain_text("ip_adapter_scale")
    screenshot(page, "ip_adapter")


# --- History and PNG info ---


def test_history_and_png_info_restore_settings(page, tmp_path):
    prepare(page, "text_to_image", "a castle on a hill at dawn", seed=51)
    generate(page, "text_to_image", 51)
    prepare(page, "text_to_image", "一座山顶上的城堡, a castle in the mist", seed=52, images=2)
    generate(page, "text_to_image", 52, 53)
    with page.expect_download() as download:
        select_image(page, "text_to_image", 0, 2)
        page.locator("#text_to_image-gallery").get_by_role("button", name="Download", exact=True).first.click()
    png = tmp_path / "castle.png"
    download.value.save_as(png)

    open_tab(page, "History")
    entries = page.locator("#history-gallery img")
    expect(entries).to_have_count(3)
    expect(page.locator("#history-gallery")).to_contain_text("seed 51")
    text_box(page, "history-search").fill("dawn")
    expect(entries).to_have_count(1)
    entries.first.click()
    parameters_shown(page, "history-selected").to_contain_text("a castle on a hill at dawn")
    text_box(page, "history-search").fill("")
    expect(entries).to_have_count(3)
    parameters_shown(page, "history-selected").not_to_contain_text("castle")  # a new list, no selection
    page.locator("#history-gallery").get_by_role("button", name=re.compile("^Thumbnail 3 of 3")).first.click()
    parameters_shown(page, "history-selected").to_contain_text("a castle on a hill at dawn")
    screenshot(page, "history")
    page.locator("#history-restore").click()
    expect(page.get_by_role("tab", selected=True)).to_have_text("Text to image")
    expect(text_box(page, "text_to_image-prompt")).to_have_value("a castle on a hill at dawn")
    expect(page.locator("#text_to_image-seed input")).to_have_value("51")

    # The history lives in this browser: it is still there after a reload.
    page.reload()
    open_tab(page, "History")
    expect(entries).to_have_count(3)

    open_tab(page, "PNG info")
    page.locator("#png-info-file input[type=file]").set_input_files(png)
    parameters_shown(page, "png-info-parameters").to_contain_text("52")
    expect(text_box(page, "png-info-text")).to_have_value(re.compile("Seed: 52"))
    screenshot(page, "png_info")
    page.locator("#png-info-restore").click()
    expect(page.get_by_role("tab", selected=True)).to_have_text("Text to image")
    expect(text_box(page, "text_to_image-prompt")).to_have_value("一座山顶上的城堡, a castle in the mist")
    expect(page.locator("#text_to_image-seed input")).to_have_value("52")
    expect(page.locator("#text_to_image-num-images input[type=number]")).to_have_value("1")


def test_two_browsers_never_see_each_others_history(visitor):
    alice, bob = visitor(), visitor()
    prepare(alice, "text_to_image", "alice's private picture", seed=61)
    generate(alice, "text_to_image", 61)
    prepare(bob, "text_to_image", "bob's private picture", seed=62)
    generate(bob, "text_to_image", 62)

    for page, own, other in ((alice, "alice", "bob"), (bob, "bob", "alice")):
        page.reload()
        open_tab(page, "History")
        expect(page.locator("#history-gallery img")).to_have_count(1)
        expect(page.locator("#history-gallery")).to_contain_text(f"{own}'s private picture")
        expect(page.locator("#history-gallery")).not_to_contain_text(other)

    stranger = visitor()
    open_tab(stranger, "History")
    expect(stranger.locator("#history-gallery img")).to_have_count(0)


def test_chinese_interface_for_a_zh_cn_browser(visitor):
    page = visitor(locale="zh-CN")
    expect(page.get_by_role("tab")).to_have_text(["文生图", "图生图", "参考图 IP-Adapter", "历史记录", "图片信息"])
    expect(page.locator("#text_to_image-generate")).to_have_text("生成")
    expect(page.locator("#text_to_image-stop")).to_have_text("停止")
    expect(page.locator("#text_to_image-prompt")).to_contain_text("提示词")
    expect(page.locator("h2").first).to_have_text("可图工作室")
