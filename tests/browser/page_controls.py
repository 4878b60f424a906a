"""Driving gradio controls the way a user does, and reading what they see; shared by the browser tests."""

import re

from playwright.sync_api import Page, expect

VIEWPORT = {"width": 1280, "height": 900}

RUN_TIMEOUT = 90_000  # ms; a 2-step 256 px run takes about a second, more on a busy CI machine
# Text a user reads as UI in the zh-CN page may still hold these: names, units, formats, keys.
LATIN_ALLOWED = {
    "Kolors", "IP-Adapter", "CFG", "PNG", "JSON", "AUTOMATIC1111", "A1111", "IndexedDB", "Ctrl", "Enter", "it/s",
    "ETA", "U-Net", "VAE", "cpu", "cuda", "mps", "float32", "float16", "bfloat16", "tiny", "Euler", "DPM", "Karras",
    "SDE", "EDM", "UniPC", "DDIM", "te", "gpu", "bit", "offload", "sequential", "model", "CPU", "GPU", "GB", "GiB",
    "LoRA", "lora", "ChatGLM", "ControlNet", "Canny", "Latent", "Lanczos", "X/Y/Z", "X", "Y", "Z",
}


def set_number(page: Page, elem_id: str, value, expected: str | None = None) -> None:
    """Type into a slider's (or a number box's) number input, as a user would."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(expected if expected is not None else str(value))


def text_box(page: Page, elem_id: str):
    """The text field of a gr.Textbox (a textarea, or an input when it has one line)."""
    return page.locator(f"#{elem_id}").locator("textarea, input[type=text]").first


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


def results(page: Page, mode: str, caption: str = "seed "):
    """The final images in a tab's gallery (live previews are captioned 'preview, step n' instead)."""
    return page.locator(f"#{mode}-gallery .grid-container img[alt^='{caption}']")


def generate(page: Page, mode: str, *seeds: int, caption: str = "seed") -> None:
    """Click Generate and wait for the gallery to show an image captioned with each seed."""
    page.locator(f"#{mode}-generate").click()
    for seed in seeds:
        page.locator(f"#{mode}-gallery img[alt='{caption} {seed}']").first.wait_for(timeout=RUN_TIMEOUT)


def select_image(page: Page, mode: str, index: int, count: int) -> None:
    """Click a gallery thumbnail (opens the large view and shows that image's parameters)."""
    page.locator(f"#{mode}-gallery").get_by_role("button", name=f"Thumbnail {index + 1} of {count}").first.click()


def toast(page: Page, text: str):
    """A toast (gradio's, or the page script's for what happens in the browser) holding `text`."""
    return page.locator("[data-testid=toast-body], .kolors-toast").filter(has_text=text)


def assert_no_error_badge(page: Page) -> None:
    """gradio's red 'Error' over the outputs of a failed event, in English or Chinese: nowhere."""
    expect(page.get_by_text(re.compile(r"^\s*(Error|错误)\s*$"))).to_have_count(0)


VISIBLE_TEXT = """() => {
  const out = [];
  const visible = (el) => el && el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true});
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, text = node.textContent.trim(), el = node.parentElement;
    // .sr-only: gradio's screen-reader announcer, off screen. It says the raw key "common.complete" after an
    // event in every language (gradio has no such key); a sighted user never sees it.
    if (!text || !visible(el) || el.closest("script, style, textarea, .sr-only")) continue;
    out.push({text, id: (el.closest("[id]") || {}).id || "", example: !!el.closest("[id$='-examples'] td")});
  }
  document.querySelectorAll("input[placeholder], textarea[placeholder]").forEach((el) => {
    if (visible(el) && el.placeholder) out.push({text: el.placeholder, id: el.id || "", example: false});
  });
  return out;
}"""


def untranslated(page: Page) -> list[str]:
    """Visible strings of the page with an English word in them (names, units and example prompts aside)."""
    found = []
    for item in page.evaluate(VISIBLE_TEXT):
        if item["example"]:  # the example prompts are content, in the language they were written in
            continue
        words = re.findall(r"[A-Za-z][A-Za-z0-9/+\-]*[A-Za-z0-9]|[A-Za-z]{2,}", item["text"])
        leftover = [word for word in words if word not in LATIN_ALLOWED
                    and not any(part in LATIN_ALLOWED for part in re.split(r"[-/+]", word))]
        if leftover:
            found.append(f"#{item['id']}: {item['text'][:80]}")
    return found


def open_visitors(browser, url: str):
    """Yields a function that opens `url` for a new visitor (a fresh browser context: own cookies and storage)."""
    contexts = []

    def open_app(locale: str = "en-US"):
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True, locale=locale)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        page.goto(url)
        page.locator("#text_to_image-generate").wait_for()
        return page

    yield open_app
    for context in contexts:
        context.close()
