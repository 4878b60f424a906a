"""Debian's Chromium driven by Python playwright, against the app served on loopback with the tiny model."""

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Quiet and offline: no sandbox (CI runs as root), no GPU, nothing phoning home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="session")
def browser():
    """One Chromium for the session; each test opens its own contexts (separate cookies and storage)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def visitor(browser, live_app):
    """Opens the app for a new visitor (a fresh browser context: own cookies and storage); returns the page."""
    contexts = []

    def open_app(locale: str = "en-US"):
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True, locale=locale)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        page.goto(live_app)
        page.locator("#text_to_image-generate").wait_for()
        return page

    yield open_app
    for context in contexts:
        context.close()


@pytest.fixture
def page(visitor):
    """One visitor with the app open in English."""
    return visitor()
