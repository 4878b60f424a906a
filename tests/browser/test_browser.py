"""The app in a real browser: Debian's Chromium (playwright) against `app.py --model tiny` on loopback.

Each test is a new visitor (a fresh browser context) doing what a user does, and asserting what they see.
Sizes are 256 px and runs a few steps, so a generation on the tiny model takes a second or two.
Screenshots for the README are taken only on purpose: KOLORS_SCREENSHOTS=1 (test_screenshots.py).
"""

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from kolors_app.metadata.png_chunks import read_image_parameters
from page_controls import (RUN_TIMEOUT, assert_no_error_badge, generate, open_tab, prepare, results, select_image,
                           set_number, text_box, toast)

pytestmark = pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                                reason="/usr/bin/chromium is missing (apt-get install chromium; .ci/run installs it)")


# --- A run: progress, preview, Stop, results, downloads ---


def test_a_run_shows_its_preview_beside_a_moving_eta_and_stop_keeps_the_partial_image(page):
    stop = page.locator("#text_to_image-stop")
    expect(stop).to_be_disabled()  # nothing runs
    prepare(page, "text_to_image", "a long run", steps=150, seed=99)
    # Ctrl+Enter in the prompt box generates, as in A1111, Fooocus and ComfyUI.
    text_box(page, "text_to_image-prompt").press("Control+Enter")
    line = page.locator("#text_to_image-progress")
    preview = page.locator("#text_to_image-gallery img[alt^='preview, step']").first
    expect(preview).to_be_visible(timeout=RUN_TIMEOUT)
    expect(line).to_have_text(re.compile(r"Sampling step \d+/150 · \d\d:\d\d · [\d.]+ it/s · ETA \d\d:\d\d"))
    first = line.inner_text()
    expect(line).not_to_have_text(first, timeout=RUN_TIMEOUT)  # it moves
    expect(line).to_have_text(re.compile(r"ETA \d\d:\d\d"))
    expect(stop).to_be_enabled()
    assert results(page, "text_to_image").count() == 0

    stop.click()
    # What the run had stays on screen, and the page says at which step it stopped.
    partial = page.locator("#text_to_image-gallery img[alt^='stopped at step']").first
    expect(partial).to_be_visible(timeout=RUN_TIMEOUT)
    expect(toast(page, "Stopped at step")).to_be_visible()
    expect(line).to_have_text(re.compile(r"Stopped at step \d+ of 150"))
    expect(stop).to_be_disabled()
    assert_no_error_badge(page)

    # The model is free again at once: the next run goes through.
    set_number(page, "text_to_image-steps", 2)
    set_number(page, "text_to_image-seed", 100)
    generate(page, "text_to_image", 100)
    expect(results(page, "text_to_image")).to_have_count(1)


def test_results_infotext_status_and_downloads_named_like_the_outputs_folder(page, tmp_path):
    prompt = "一只红色的狐狸坐在雪地里, a red fox in the snow"
    prepare(page, "text_to_image", prompt, seed=1234, images=2)
    text_box(page, "text_to_image-negative").fill("blurry")
    expect(page.locator("#text_to_image-tokens")).to_have_text(re.compile(r"\b[1-9]\d* / 256"))
    generate(page, "text_to_image", 1234, 1235)
    expect(results(page, "text_to_image")).to_have_count(2)
    # The line under Generate: the last run's time, it/s and seeds; the infotext of the image on screen.
    expect(page.locator("#text_to_image-progress")).to_have_text(
        re.compile(r"Done: 2 image\(s\) in [\d.]+ s · [\d.]+ it/s · seed 1234, 1235"))
    infotext = page.locator("#text_to_image-infotext textarea")
    expect(infotext).to_have_value(re.compile(r"^一只红色的狐狸.*\nNegative prompt: blurry\nSteps: 2, .*Seed: 1234"))
    # No share button where it cannot work (it does only on Spaces).
    expect(page.locator("#text_to_image-gallery").get_by_role("button", name="Share")).to_have_count(0)

    select_image(page, "text_to_image", 1, 2)
    expect(infotext).to_have_value(re.compile(r"Seed: 1235"))
    page.locator("#text_to_image-reuse-seed").click()
    expect(page.locator("#text_to_image-seed input")).to_have_value("1235")
    with page.expect_download() as download:
        page.locator("#text_to_image-gallery").get_by_role("button", name="Download", exact=True).first.click()
    name = download.value.suggested_filename
    assert re.fullmatch(r"\d{5}-1235-一只红色的狐狸坐在雪地里-a-red-fox-in-the\.png", name), name
    saved = tmp_path / name
    download.value.save_as(saved)
    found = read_image_parameters(saved)
    assert found.parameters["seed"] == 1235 and found.parameters["prompt"] == prompt
    assert found.parameters["negative_prompt"] == "blurry" and "Seed: 1235" in found.text

    # Use these settings on one image of a batch: its settings back, the batch size kept.
    text_box(page, "text_to_image-prompt").fill("something else")
    set_number(page, "text_to_image-steps", 9)
    page.locator("#text_to_image-use-settings").click()
    expect(toast(page, "Settings restored into Text to image.")).to_be_visible()
    expect(text_box(page, "text_to_image-prompt")).to_have_value(prompt)
    expect(page.locator("#text_to_image-steps input[type=number]")).to_have_value("2")
    expect(page.locator("#text_to_image-seed input")).to_have_value("1235")
    expect(page.locator("#text_to_image-num-images input[type=number]")).to_have_value("2")
    assert_no_error_badge(page)


# --- Quick actions: a toast, never a red "Error" ---


def test_every_quick_action_shows_its_message_and_leaves_the_controls_as_they_were(page, tmp_path):
    text_box(page, "text_to_image-prompt").fill("kept as it is")
    for button, message in (("#text_to_image-use-settings", "Nothing to restore"),
                            ("#text_to_image-reuse-seed", "No image yet"),
                            ("#text_to_image-send-i2i", "No image yet"),
                            ("#text_to_image-send-ip", "No image yet")):
        page.locator(button).click()
        expect(toast(page, message).last).to_be_visible()
        assert_no_error_badge(page)
    open_tab(page, "PNG info")
    page.locator("#png-info-restore").click()
    expect(toast(page, "Nothing to restore").last).to_be_visible()
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    page.locator("#png-info-file input[type=file]").set_input_files(not_image)
    expect(toast(page, "image:").last).to_be_visible()
    assert_no_error_badge(page)
    open_tab(page, "History")
    page.locator("#history-restore").click()
    expect(toast(page, "Nothing to restore").last).to_be_visible()
    page.locator("#history-delete").click()
    expect(toast(page, "Click an entry first.")).to_be_visible()
    bad = tmp_path / "bad-history.json"
    bad.write_text("{not json")
    page.locator("#history-import-file").set_input_files(bad)
    expect(toast(page, "This file cannot be imported")).to_be_visible()
    assert_no_error_badge(page)
    open_tab(page, "Text to image")
    expect(text_box(page, "text_to_image-prompt")).to_have_value("kept as it is")

    # Right after a run the image on screen counts as selected.
    prepare(page, "text_to_image", "a lighthouse", seed=7)
    generate(page, "text_to_image", 7)
    set_number(page, "text_to_image-seed", 5)
    page.locator("#text_to_image-use-settings").click()
    expect(toast(page, "Settings restored into Text to image.")).to_be_visible()
    expect(page.locator("#text_to_image-seed input")).to_have_value("7")
    assert_no_error_badge(page)


def test_typed_sizes_snap_like_the_slider_and_say_so(page):
    set_number(page, "text_to_image-width", 1001, expected="1000")
    expect(toast(page, "Width 1001 is not allowed: set to 1000")).to_be_visible()
    set_number(page, "text_to_image-height", 5000, expected="2048")
    expect(toast(page, "set to 2048")).to_be_visible()
    expect(page.locator("#text_to_image-aspect input:checked")).to_have_value("Custom")
    # A preset the user picks sets both sizes; typing them back picks it again.
    page.locator("#text_to_image-aspect").get_by_text("16:9", exact=True).click()
    expect(page.locator("#text_to_image-width input[type=number]")).to_have_value("1344")
    expect(page.locator("#text_to_image-height input[type=number]")).to_have_value("768")
    set_number(page, "text_to_image-width", 1024)
    set_number(page, "text_to_image-height", 1024)
    expect(page.locator("#text_to_image-aspect input:checked")).to_have_value("1:1")
    assert_no_error_badge(page)


def test_samplers_change_steps_and_guidance_only_when_the_user_had_not(page):
    def choose(sampler):
        page.locator("#text_to_image-scheduler input").click()
        page.get_by_role("option", name=sampler, exact=True).click()

    steps = page.locator("#text_to_image-steps input[type=number]")
    choose("DPM++ 2M Karras")
    expect(steps).to_have_value("25")
    expect(page.locator("#text_to_image-guidance input[type=number]")).to_have_value("6.5")
    set_number(page, "text_to_image-steps", 30)
    choose("Euler")
    expect(steps).to_have_value("30")  # the user's own value stays
    # The IP-Adapter tab: sampler, steps and guidance agree; strength waits for an init image.
    open_tab(page, "IP-Adapter")
    expect(page.locator("#ip_adapter-scheduler input")).to_have_value("DPM++ 2M Karras")
    expect(page.locator("#ip_adapter-steps input[type=number]")).to_have_value("25")
    expect(page.locator("#ip_adapter-strength input[type=number]")).to_be_disabled()


# --- Send to, history, settings ---


def test_send_to_carries_prompt_seed_and_size_and_history_restores_the_init_image(page, tmp_path):
    prepare(page, "text_to_image", "a red fox", seed=11)
    text_box(page, "text_to_image-negative").fill("blurry")
    generate(page, "text_to_image", 11)
    page.locator("#text_to_image-send-i2i").click()
    expect(page.get_by_role("tab", selected=True)).to_have_text("Image to image")
    expect(page.locator("#image_to_image-image img")).to_have_count(1)
    expect(text_box(page, "image_to_image-prompt")).to_have_value("a red fox")
    expect(text_box(page, "image_to_image-negative")).to_have_value("blurry")
    expect(page.locator("#image_to_image-seed input")).to_have_value("11")
    expect(page.locator("#image_to_image-width input[type=number]")).to_have_value("256")
    expect(page.locator("#image_to_image-height input[type=number]")).to_have_value("256")
    page.locator("#image_to_image-resize").get_by_text("Fit (pad)", exact=True).click()
    text_box(page, "image_to_image-prompt").fill("an oil painting of a fox")
    set_number(page, "image_to_image-steps", 4)
    set_number(page, "image_to_image-seed", 21)
    generate(page, "image_to_image", 21)
    expect(page.locator("#image_to_image-infotext textarea")).to_have_value(re.compile("Denoising strength"))

    open_tab(page, "Text to image")
    page.locator("#text_to_image-send-ip").click()
    expect(page.get_by_role("tab", selected=True)).to_have_text("IP-Adapter")
    expect(page.locator("#ip_adapter-reference img")).to_have_count(1)
    expect(page.locator("#ip_adapter-seed input")).to_have_value("11")

    # The image-to-image entry of the history brings its init image back (the next Generate works).
    # The page saves a run in the browser after it shows it: wait for both entries before reloading.
    open_tab(page, "History")
    expect(page.locator("#history-grid .kh-card")).to_have_count(2)
    page.reload()
    page.locator("#text_to_image-generate").wait_for()
    open_tab(page, "History")
    cards = page.locator("#history-grid .kh-card")
    expect(cards).to_have_count(2)
    cards.filter(has_text="Image to image").first.click()
    expect(page.locator("#history-detail figure")).to_contain_text("Init image")
    page.locator("#history-restore").click()
    expect(page.get_by_role("tab", selected=True)).to_have_text("Image to image")
    expect(page.locator("#image_to_image-image img")).to_have_count(1)
    expect(text_box(page, "image_to_image-prompt")).to_have_value("an oil painting of a fox")
    generate(page, "image_to_image", 21)
    assert_no_error_badge(page)


def test_history_keeps_full_images_in_this_browser(page, tmp_path):
    prepare(page, "text_to_image", "a castle on a hill at dawn", seed=51)
    generate(page, "text_to_image", 51)
    prepare(page, "text_to_image", "一座山顶上的城堡, a castle in the mist", seed=52, images=2)
    generate(page, "text_to_image", 52, 53)
    expect(toast(page, "Saved to the history (2).")).to_be_visible()

    open_tab(page, "History")
    expect(page.locator("#history-help")).to_contain_text("Kept only in this browser (IndexedDB)")
    cards = page.locator("#history-grid .kh-card")
    expect(cards).to_have_count(3)
    expect(cards.first).to_contain_text("一座山顶上的城堡")  # captions carry the prompt
    page.locator("#history-search-box").fill("dawn")
    expect(cards).to_have_count(1)
    cards.first.click()
    expect(page.locator("#history-infotext")).to_contain_text("a castle on a hill at dawn")
    # The full image (256 px, not a thumbnail), to open or download.
    full = page.locator("#history-detail img.kh-full")
    expect(full).to_be_visible()
    assert full.evaluate("img => img.naturalWidth") == 256
    with page.expect_download() as download:
        page.locator("#history-download").click()
    assert download.value.suggested_filename == "51-a-castle-on-a-hill-at-dawn.png"
    download.value.save_as(tmp_path / "entry.png")
    assert read_image_parameters(tmp_path / "entry.png").parameters["seed"] == 51
    page.locator("#history-search-box").fill("")
    expect(cards).to_have_count(3)

    page.locator("#history-restore").click()
    expect(page.get_by_role("tab", selected=True)).to_have_text("Text to image")
    expect(text_box(page, "text_to_image-prompt")).to_have_value("a castle on a hill at dawn")
    expect(page.locator("#text_to_image-seed input")).to_have_value("51")

    # Still there after a reload; export in one click, clear (confirmed), import it back.
    page.reload()
    open_tab(page, "History")
    expect(cards).to_have_count(3)
    with page.expect_download() as download:
        page.locator("#history-export").click()
    exported = tmp_path / "history.json"
    download.value.save_as(exported)
    document = json.loads(exported.read_text())
    assert document["format"] == "kolors-studio-history" and len(document["entries"]) == 3
    assert document["entries"][0]["image"].startswith("data:image/png;base64,")
    # One listener for both dialogs: with page.once, playwright drops its dialog subscription after
    # the first one and the browser may dismiss the second on its own before it is re-registered.
    answers = [False, True]
    page.on("dialog", lambda dialog: dialog.accept() if answers.pop(0) else dialog.dismiss())
    page.locator("#history-clear").click()
    expect(cards).to_have_count(3)  # not confirmed: nothing deleted
    page.locator("#history-clear").click()
    expect(cards).to_have_count(0)
    expect(toast(page, "History cleared.")).to_be_visible()
    page.locator("#history-import-file").set_input_files(exported)
    expect(toast(page, "Imported 3 entries.")).to_be_visible()
    expect(cards).to_have_count(3)
    assert_no_error_badge(page)


def test_two_browsers_never_see_each_others_history(visitor):
    alice, bob = visitor(), visitor()
    prepare(alice, "text_to_image", "alice's private picture", seed=61)
    generate(alice, "text_to_image", 61)
    prepare(bob, "text_to_image", "bob's private picture", seed=62)
    generate(bob, "text_to_image", 62)
    for page, own, other in ((alice, "alice", "bob"), (bob, "bob", "alice")):
        page.reload()
        open_tab(page, "History")
        expect(page.locator("#history-grid .kh-card")).to_have_count(1)
        expect(page.locator("#history-grid")).to_contain_text(f"{own}'s private picture")
        expect(page.locator("#history-grid")).not_to_contain_text(other)
    stranger = visitor()
    open_tab(stranger, "History")
    expect(stranger.locator("#history-grid .kh-card")).to_have_count(0)


def test_last_settings_come_back_after_a_reload_and_reset(page):
    prepare(page, "text_to_image", "remember me", steps=3, seed=77)
    set_number(page, "text_to_image-guidance", 7.5)
    generate(page, "text_to_image", 77)
    open_tab(page, "Image to image")
    set_number(page, "image_to_image-strength", 0.42)
    page.reload()
    page.locator("#text_to_image-generate").wait_for()
    expect(text_box(page, "text_to_image-prompt")).to_have_value("remember me")
    expect(page.locator("#text_to_image-steps input[type=number]")).to_have_value("3")
    expect(page.locator("#text_to_image-guidance input[type=number]")).to_have_value("7.5")
    expect(page.locator("#text_to_image-width input[type=number]")).to_have_value("256")
    open_tab(page, "Image to image")  # never generated there: its defaults
    expect(page.locator("#image_to_image-strength input[type=number]")).to_have_value("0.7")
    open_tab(page, "Text to image")
    page.locator("#text_to_image-reset").click()
    expect(toast(page, "This tab's settings are back to the defaults.")).to_be_visible()
    expect(page.locator("#text_to_image-steps input[type=number]")).to_have_value("50")
    page.reload()
    page.locator("#text_to_image-generate").wait_for()
    expect(page.locator("#text_to_image-width input[type=number]")).to_have_value("1024")
    expect(text_box(page, "text_to_image-prompt")).to_have_value("")


def test_examples_fill_the_prompt_boxes(page):
    row = page.locator("#text_to_image-examples tbody tr").nth(1)
    example = row.locator("td").nth(1).inner_text().strip().rstrip(".…")
    row.click()
    expect(text_box(page, "text_to_image-prompt")).to_have_value(re.compile("^" + re.escape(example)))
    expect(text_box(page, "text_to_image-negative")).not_to_have_value("")
