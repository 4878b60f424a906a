"""Hostile visitors in a real browser: HTML and script in prompts, PNG files and history files stay text;
each visitor keeps their own settings and results.

A script that ran would set `window.__xss`; every test checks it never does and that no element the
hostile text describes exists in the page.
"""

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from kolors_app.outputs.history import make_thumbnail
from kolors_app.metadata.png_chunks import png_bytes
from page_controls import set_number, text_box

pytestmark = pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium is missing")

RUN_TIMEOUT = 90_000  # ms
HOSTILE = ('<img src=x onerror="window.__xss=1"><script>window.__xss=2</script><b id=injected>bold</b>'
           '<a id=phish href="https://evil.example/login">log in again</a>')


def run_small(page: Page, prompt: str, seed: int) -> None:
    """Generate one 256 px, 2-step image in Text to image and wait for it."""
    text_box(page, "text_to_image-prompt").fill(prompt)
    for elem_id, value in (("width", 256), ("height", 256), ("steps", 2), ("seed", seed)):
        set_number(page, f"text_to_image-{elem_id}", value)
    page.locator("#text_to_image-generate").click()
    page.locator(f"#text_to_image-gallery img[alt='seed {seed}']").first.wait_for(timeout=RUN_TIMEOUT)


def open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    expect(page.get_by_role("tab", selected=True)).to_have_text(name)


def assert_nothing_injected(page: Page) -> None:
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("#injected").count() == 0 and page.locator("#phish").count() == 0


def test_html_and_script_in_a_prompt_are_shown_as_text_everywhere(page, tmp_path):
    run_small(page, HOSTILE, seed=71)
    expect(page.locator("#text_to_image-gallery img[alt='seed 71']").first).to_be_visible()
    page.locator("#text_to_image-gallery").get_by_role("button", name="Thumbnail 1 of 1").first.click()
    expect(page.locator("#text_to_image-infotext textarea")).to_have_value(re.compile(re.escape(HOSTILE)))
    assert_nothing_injected(page)

    open_tab(page, "History")
    expect(page.locator("#history-grid")).to_contain_text(HOSTILE[:40])
    page.locator("#history-grid .kh-card").first.click()
    expect(page.locator("#history-infotext")).to_contain_text(HOSTILE)
    assert_nothing_injected(page)

    # The PNG a visitor downloads carries the prompt; reading it back in PNG info shows it as text.
    with page.expect_download() as download:
        open_tab(page, "Text to image")
        page.locator("#text_to_image-gallery").get_by_role("button", name="Download", exact=True).first.click()
    png = tmp_path / "hostile.png"
    download.value.save_as(png)
    open_tab(page, "PNG info")
    page.locator("#png-info-file input[type=file]").set_input_files(png)
    expect(page.locator("#png-info-parameters")).to_contain_text(HOSTILE)
    expect(page.locator("#png-info-text textarea")).to_have_value(re.compile(re.escape(HOSTILE)))
    page.locator("#png-info-restore").click()
    expect(text_box(page, "text_to_image-prompt")).to_have_value(HOSTILE)
    assert_nothing_injected(page)


def test_a_crafted_png_and_a_shared_history_file_stay_text(page, tmp_path):
    # A PNG someone shares, with markup where the prompt and the sampler name belong, restored into the tab.
    crafted = tmp_path / "crafted.png"
    parameters = {"mode": "text_to_image", "prompt": HOSTILE, "scheduler": HOSTILE, "seed": 5}
    crafted.write_bytes(png_bytes(Image.new("RGB", (32, 32), "red"), parameters))
    open_tab(page, "PNG info")
    page.locator("#png-info-file input[type=file]").set_input_files(crafted)
    expect(page.locator("#png-info-parameters")).to_contain_text(HOSTILE)
    page.locator("#png-info-restore").click()
    expect(text_box(page, "text_to_image-prompt")).to_have_value(HOSTILE)
    assert_nothing_injected(page)
    # The unknown sampler name is not pushed into the dropdown: it stays on a sampler the app has.
    expect(page.locator("#text_to_image-scheduler input")).to_have_value("Euler")
    assert_nothing_injected(page)

    # A history file someone shares: markup in a prompt, and an entry that is not one (skipped). The page
    # script reads it in the browser; the server never sees it.
    entry = {"id": "shared-1", "time": 1_700_000_000, "thumbnail": make_thumbnail(Image.new("RGB", (8, 8), "red")),
             "parameters": {"mode": "text_to_image", "prompt": HOSTILE, "seed": 5}}
    shared = tmp_path / "shared-history.json"
    shared.write_text(json.dumps({"format": "kolors-studio-history", "version": 1,
                                  "entries": [entry, {"id": HOSTILE, "parameters": HOSTILE}]}))
    open_tab(page, "History")
    page.locator("#history-import-file").set_input_files(shared)
    expect(page.locator(".kolors-toast", has_text="Imported 1 entries.")).to_be_visible()
    expect(page.locator("#history-grid")).to_contain_text(HOSTILE[:40])
    page.locator("#history-grid .kh-card").first.click()
    expect(page.locator("#history-infotext")).to_contain_text('<img src=x onerror=')  # as text (JSON of a v1 file)
    assert_nothing_injected(page)


def test_each_visitor_keeps_their_own_settings_and_results(visitor):
    alice, bob = visitor(), visitor()
    text_box(alice, "text_to_image-prompt").fill("alice's settings")
    set_number(alice, "text_to_image-width", 512)
    set_number(alice, "text_to_image-steps", 7)
    expect(text_box(bob, "text_to_image-prompt")).to_have_value("")
    expect(bob.locator("#text_to_image-width input[type=number]")).to_have_value("1024")
    expect(bob.locator("#text_to_image-steps input[type=number]")).to_have_value("50")

    # Both generate at once: each gallery shows only its own image, with its own parameters.
    for page, prompt, seed in ((alice, "alice's fox", 81), (bob, "bob's owl", 82)):
        text_box(page, "text_to_image-prompt").fill(prompt)
        for elem_id, value in (("width", 256), ("height", 256), ("steps", 2), ("seed", seed)):
            set_number(page, f"text_to_image-{elem_id}", value)
    alice.locator("#text_to_image-generate").click()
    bob.locator("#text_to_image-generate").click()
    for page, own, other in ((alice, 81, 82), (bob, 82, 81)):
        page.locator(f"#text_to_image-gallery img[alt='seed {own}']").first.wait_for(timeout=RUN_TIMEOUT)
        expect(page.locator(f"#text_to_image-gallery img[alt='seed {other}']")).to_have_count(0)
    bob.locator("#text_to_image-gallery").get_by_role("button", name="Thumbnail 1 of 1").first.click()
    expect(bob.locator("#text_to_image-infotext textarea")).to_have_value(re.compile("bob's owl"))
    expect(bob.locator("#text_to_image-infotext textarea")).not_to_have_value(re.compile("alice"))
    assert "alice" not in json.dumps(bob.evaluate("Object.assign({}, window.localStorage)"))


@pytest.fixture(scope="module")
def public_url(start_app):
    """A public app (as on a Space) on loopback: GETs limited per address, the root chosen by the app."""
    from gradio_http import stop_process

    process, url, _log = start_app("--host", "127.0.0.1", env={"SPACE_ID": "someone/kolors-test"})
    yield url
    stop_process(process)


def test_a_public_page_loads_uploads_and_runs_within_the_get_limit(browser, public_url, tmp_path):
    from kolors_app.serving.quotas import DEFAULTS, GET_BURST_SECONDS

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    gets, refused = [], []
    page.on("request", lambda request: gets.append(request.url) if request.method == "GET" else None)
    page.on("response", lambda response: refused.append(response.url) if response.status in (403, 409, 429)
            else None)
    page.goto(public_url)
    expect(page.locator("#text_to_image-generate")).to_be_visible()
    expect(page.locator("#status-bar")).to_contain_text("tiny")
    loaded = len(gets)
    run_small(page, "a red fox", 31)
    # A same-origin upload from the page passes the cross-site check and the image guard.
    picture = tmp_path / "red.png"
    Image.new("RGB", (96, 64), (200, 30, 30)).save(picture)
    open_tab(page, "Image to image")
    page.locator("#image_to_image-image input[type=file]").set_input_files(picture)
    expect(page.locator("#image_to_image-image img")).to_be_visible()
    burst = DEFAULTS["get_rate"][1] * GET_BURST_SECONDS
    print(f"GETs: {loaded} to load the page, {len(gets)} with a run and an upload (the burst allowed is {burst})")
    assert not refused, refused
    assert len(gets) < burst / 2
    context.close()
