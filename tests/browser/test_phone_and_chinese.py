"""The zh-CN page with no untranslated string, the 390 px phone layout, and the README's screenshots
(taken only on purpose: KOLORS_SCREENSHOTS=1 .venv/bin/python -m pytest tests/browser/test_phone_and_chinese.py)."""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from page_controls import RUN_TIMEOUT, assert_no_error_badge, generate, prepare, text_box, toast, untranslated

pytestmark = pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium is missing")

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}
TABS = {"text_to_image": ("Text to image", "文生图"), "image_to_image": ("Image to image", "图生图"),
        "ip_adapter": ("IP-Adapter", "参考图 IP-Adapter"), "inpaint": ("Inpaint", "局部重绘"),
        "history": ("History", "历史记录"),
        "png_info": ("PNG info", "图片信息")}


def open_phone(browser, live_app, locale="en-US"):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale=locale)
    page = context.new_page()
    page.goto(live_app)
    page.locator("#text_to_image-generate").wait_for()
    return context, page


def settled_untranslated(page) -> list[str]:
    """untranslated(), once the page has settled (gradio's own status texts come and go)."""
    for _ in range(10):
        found = untranslated(page)
        if not found:
            return found
        page.wait_for_timeout(300)
    return found


def test_the_chinese_page_has_no_untranslated_string(visitor):
    page = visitor(locale="zh-CN")
    expect(page.get_by_role("tab")).to_have_text([zh for _, zh in TABS.values()] + ["创意工具"])
    expect(page.locator("h2").first).to_have_text("可图工作室")
    page.wait_for_timeout(500)  # the page-load event localises the examples and the status line
    for _, zh in TABS.values():
        page.get_by_role("tab", name=zh, exact=True).click()
        expect(page.get_by_role("tab", selected=True)).to_have_text(zh)
        page.wait_for_timeout(300)
        assert settled_untranslated(page) == [], f"untranslated in {zh}"
    # What the server says is in Chinese too: toasts, captions, the progress line.
    page.get_by_role("tab", name="文生图", exact=True).click()
    page.locator("#text_to_image-use-settings").click()
    expect(toast(page, "没有可恢复的内容")).to_be_visible()
    # gradio titles its toasts with their type, in English; the page's script says it in Chinese.
    expect(toast(page, "没有可恢复的内容").locator(".toast-title")).to_have_text(re.compile(r"^\s*警告"))
    assert settled_untranslated(page) == []
    prepare(page, "text_to_image", "一只猫", seed=5)
    generate(page, "text_to_image", 5, caption="种子")
    expect(page.locator("#text_to_image-progress")).to_have_text(re.compile(r"完成：1 张"))
    assert settled_untranslated(page) == []
    assert_no_error_badge(page)


def test_a_390_px_phone_reaches_generate_at_once_and_a_batch_of_4_fits(browser, live_app):
    context, page = open_phone(browser, live_app)
    try:
        generate_box = page.locator("#text_to_image-generate").bounding_box()
        assert generate_box["y"] + generate_box["height"] <= PHONE["height"], generate_box
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing overflows
        table = page.locator("#text_to_image-examples").bounding_box()
        assert table["x"] >= 0 and table["x"] + table["width"] <= PHONE["width"]
        prepare(page, "text_to_image", "four foxes", seed=40, images=4)
        text_box(page, "text_to_image-prompt").scroll_into_view_if_needed()
        generate(page, "text_to_image", 40, 41, 42, 43)
        gallery = page.locator("#text_to_image-gallery").bounding_box()
        for image in page.locator("#text_to_image-gallery .grid-container img").all():
            box = image.bounding_box()
            assert gallery["y"] <= box["y"] and box["y"] + box["height"] <= gallery["y"] + gallery["height"] + 1
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    finally:
        context.close()


@pytest.mark.skipif(os.environ.get("KOLORS_SCREENSHOTS") != "1", reason="screenshots only on purpose")
@pytest.mark.parametrize("locale,lang", [("en-US", "en"), ("zh-CN", "zh")])
def test_screenshots(browser, live_app, locale, lang):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for device, viewport in (("desktop", {"width": 1280, "height": 900}), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport, locale=locale, is_mobile=device == "phone")
        page = context.new_page()
        page.goto(live_app)
        page.locator("#text_to_image-generate").wait_for()
        prepare(page, "text_to_image", "一只红色的狐狸坐在雪地里, a red fox in the snow", seed=1234, images=2)
        generate(page, "text_to_image", 1234, 1235, caption="seed" if lang == "en" else "种子")
        page.wait_for_timeout(6000)  # toasts gone
        for mode, names in TABS.items():
            # On a phone, gradio folds the tabs that do not fit into a menu: click the tab button itself.
            page.evaluate("""name => [...document.querySelectorAll("button[role=tab], .overflow-dropdown button")]
                .find(b => b.textContent.trim() === name).click()""", names[lang == "zh"])
            page.wait_for_timeout(800)
            if mode == "history":
                page.locator("#history-grid .kh-card").first.click()
            page.mouse.move(0, 0)
            page.evaluate("document.activeElement && document.activeElement.blur()")
            page.screenshot(path=str(SCREENSHOTS / f"{mode}_{lang}_{device}.png"), full_page=device == "desktop")
        context.close()
    assert RUN_TIMEOUT
