"""Debian's Chromium driven by Python playwright, against the app served on loopback with the tiny model."""

from pathlib import Path

import pytest
from page_controls import open_visitors

CHROMIUM = Path("/usr/bin/chromium")
# Quiet and offline: no sandbox (CI runs as root), no GPU, nothing phoning home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


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
    """Opens the app for a new visitor; returns the page."""
    yield from open_visitors(browser, live_app)


@pytest.fixture
def page(visitor):
    """One visitor with the app open in English."""
    return visitor()
