"""Driving gradio controls the way a user does, shared by the browser tests."""

from playwright.sync_api import Page, expect


def set_number(page: Page, elem_id: str, value) -> None:
    """Type into a slider's (or a number box's) number input, as a user would."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value))


def text_box(page: Page, elem_id: str):
    """The text field of a gr.Textbox (a textarea, or an input when it has one line)."""
    return page.locator(f"#{elem_id}").locator("textarea, input[type=text]").first
