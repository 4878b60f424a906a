"""The three generation tabs; each one's handler is a public, queued API endpoint of the same name.

The page runs the same request through its own event (private), which adds what a visitor sees and an API
client does not need: the progress line beside the live preview, the infotext of the first image, typed sizes
snapped instead of refused, and image-to-image's resize mode.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import gradio as gr
from PIL import Image, ImageOps

from kolors_app.media.images import header_size, load_image, size_for
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import GenerationRequest, InitImage, Reference
from kolors_app.core.prompts import load_examples
from kolors_app.ui.api_endpoints import wire_program_endpoint
from kolors_app.ui.control_units import ControlUnitsBox, control_accordion, units_from, with_control_parameters
from kolors_app.ui.creative_accordion import creative_accordion, with_creative_part
from kolors_app.ui.controls import GenerationControls, aspect_for, build_controls, infotext_of, snapped_size
from kolors_app.ui.i18n import i18n, language, name_of, tr
from kolors_app.ui.runner import (AppContext, Frame, PreviewFiles, as_text, finish, progress_line, run_frames,
                                  run_request, owner_of)

log = logging.getLogger(__name__)
# Every event that runs the model shares this id, so the GPU runs one request at a time.
GPU_QUEUE = "gpu"
# image_mode=None: gradio hands over the uploaded file as it is; with a mode it would decode and convert every
# upload (a 100-megapixel PNG of 400 kB takes 600 MB) before load_image's limits could refuse it. Even so its
# preprocessing opens the file (Pillow reads every TIFF tag then), so every event taking an image input has
# preprocess=False and opens it through load_image (tests/test_round3_images.py checks them all).
IMAGE_INPUT = {"type": "filepath", "image_mode": None}
# How image-to-image brings the init image to the generation size (A1111's resize modes).
RESIZE_MODES = ("crop", "fit", "stretch")
LINE_SECONDS = 0.5  # the progress line changes at most twice a second (each update costs, see bench/api.py)


@dataclass
class GenerationTab:
    """A built generation tab: its shared controls plus its own inputs."""

    mode: str
    controls: GenerationControls
    images: dict[str, gr.Image] = field(default_factory=dict)
    sliders: dict[str, gr.Slider] = field(default_factory=dict)
    run_event: object = None
    options: dict[str, gr.components.Component] = field(default_factory=dict)
    examples: gr.Dataset | None = None
    handler: object = None  # the request as a generator of (gallery, result), for tests and benches
    creative: object = None  # the LoRA, styles and hires-fix accordion (ui/creative.py)
    units: ControlUnitsBox | None = None  # the ControlNet accordion
    # Restored from saved parameters but not remembered between visits (a unit's type needs its image again).
    restored: dict[str, gr.components.Component] = field(default_factory=dict)

    def __post_init__(self):
        if self.units is not None:
            self.restored = {**self.units.restorable(), **self.restored}
            self.images = {**self.images, **self.units.images()}


def _image(ctx: AppContext, name: str, value: str | dict | None, required: bool, lang: str = "en"):
    """Open an uploaded image safely, or refuse it naming the field."""
    # The generate events skip gradio's preprocessing (which decodes and converts an image before any limit
    # applies), so the value is gradio's file payload; direct calls pass a path.
    source = (value.get("path") or value.get("url")) if isinstance(value, dict) else value
    if not source:
        if required:
            raise gr.Error(tr(lang, "image_required", field=name), title=tr(lang, "title_invalid_input"))
        return None
    try:
        return load_image(source, ctx.settings.limits, field=name, allowed_roots=[gr.utils.get_upload_folder()])
    except ValidationError as error:
        raise gr.Error(as_text(str(error)), title=tr(lang, "title_invalid_input")) from None


def example_rows(lang: str = "en") -> list[list[str]]:
    """The curated prompts as table rows, the category in the visitor's language where the file has it."""
    rows = []
    for item in load_examples():
        category = item.get(f"category_{lang}") or item["category"]
        rows.append([category, item["prompt"], item.get("negative_prompt", "")])
    return rows


EXAMPLE_HEADERS = {"en": ["Category", "Prompt", "Negative prompt"], "zh": ["类别", "提示词", "反向提示词"]}


def localized_examples(lang: str) -> dict:
    """The examples table's headers and categories in the visitor's language (gradio translates neither)."""
    return gr.Dataset(samples=example_rows(lang), headers=EXAMPLE_HEADERS[lang])


def _examples(controls: GenerationControls, mode: str) -> gr.Dataset | None:
    """A table of the curated prompts; a click fills the prompt boxes."""
    rows = example_rows()
    if not rows:
        return None
    table = gr.Dataset(components=[gr.Textbox(visible=False)] * 3, samples=rows, label=i18n("examples"),
                       headers=EXAMPLE_HEADERS["en"], samples_per_page=len(rows), elem_id=f"{mode}-examples")
    table.click(lambda row: (row[1], row[2]), table, [controls.prompt, controls.negative_prompt], queue=False,
                api_visibility="private")
    return table


def size_of_upload(value: str | dict | None, limits=None):
    """Width, height and preset matching an uploaded image's aspect ratio, at about one megapixel.

    Its event skips gradio's preprocessing, which would open the file (and read every TIFF tag) before any check:
    `value` is gradio's file payload, or a path.
    """
    path = value.get("path") if isinstance(value, dict) else value
    try:
        size = header_size(path, limits, allowed_roots=[gr.utils.get_upload_folder()])  # structure, header only
        width, height = size_for(size, limits=limits)
    except (ValidationError, TypeError):  # unreadable: the generate handler reports it properly
        return gr.skip(), gr.skip(), gr.skip()
    return width, height, aspect_for(width, height)


def token_count(ctx: AppContext, text: str) -> str:
    """'n / 256', with a warning past the limit; '? / 256' while the tokenizer is unavailable."""
    limit = ctx.settings.limits.max_prompt_tokens
    if not text:
        return f"0 / {limit}"
    try:
        count = ctx.manager.tokenizer_length(text[: ctx.settings.limits.max_prompt_chars])
    # Not downloaded yet, offline, or the model still loading: counting is a nicety, the next keystroke retries.
    except (OSError, ValueError, RuntimeError, ImportError) as error:
        log.info("token count unavailable: %s", error)
        return f"? / {limit}"
    return f"{count} / {limit}" + (f" ⚠️ only the first {limit} are used" if count > limit else "")


def resized(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """The init image at width x height: crop (cover, centre-crop), fit (contain, padded) or stretch."""
    if image.size == (width, height):
        return image
    if mode == "stretch":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if mode == "fit":
        return ImageOps.pad(image, (width, height), Image.Resampling.LANCZOS, color=(127, 127, 127))
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


def done_line(lang: str, frame: Frame, summary: dict) -> str:
    """'Done: 2 image(s) in 3.2 s · 12.5 it/s · seed 1234, 1235' (or the stopped notice)."""
    if summary.get("stopped"):
        if frame.step:
            return tr(lang, "stopped", step=frame.step, total=frame.total)
        return tr(lang, "stopped_early")
    seeds = ", ".join(str(image["seed"]) for image in summary["images"][:8])
    return tr(lang, "done", count=len(summary["images"]), seconds=f"{summary.get('seconds', frame.elapsed):.1f}",
              rate=f"{frame.rate:.2f}", seeds=seeds)


def page_run(ctx: AppContext, make_request, http: gr.Request | None):
    """The page's run: (gallery, result, progress line, infotext, parameters, selected index) as it goes.

    Errors become a toast and a line, never gradio's red "Error" over every output.
    """
    lang = language(http)
    skip, previews = gr.skip(), PreviewFiles()
    try:
        request = make_request(lang)
        loaded = ctx.manager.loaded
        shown_at = 0.0
        for frame in run_frames(ctx, request, http, None):
            if frame.kind == "done":
                gallery, summary = finish(ctx, frame.result, lang, frame)
                first = (summary.get("images") or [None])[0]
                yield (gallery, summary, done_line(lang, frame, summary),
                       infotext_of(first), first, 0)
                return
            now = time.perf_counter()
            line = progress_line(lang, frame, loaded)
            if frame.kind == "preview":
                shown_at = now
                yield ([(previews.file(frame.image), tr(lang, "caption_preview", step=frame.step))], skip, line, skip,
                       skip, skip)
            elif now - shown_at >= LINE_SECONDS or frame.kind == "wait":
                # Only yields that show something: each costs gradio an update of every output (bench/api.py),
                # and a closed (cancelled) run still ends within LINE_SECONDS.
                shown_at = now
                yield skip, skip, line, skip, skip, skip
    except gr.Error as error:
        gr.Warning(error.message, title=error.title or tr(lang, "title_error"))
        yield skip, skip, "⚠️ " + error.message, skip, skip, skip
    finally:
        previews.remove()


def snap_request_sizes(ctx: AppContext, width, height, lang: str) -> tuple:
    """The page snaps typed sizes (and says so) where the API refuses them."""
    limits = ctx.settings.limits
    sizes = []
    for name, value in (("width", width), ("height", height)):
        snapped = snapped_size(value, limits)
        if snapped is not None and snapped != value:
            gr.Info(tr(lang, "snapped", field=name_of(lang, name), value=value, snapped=snapped,
                       low=limits.min_size, high=limits.max_size), title=tr(lang, "title_info"))
            value = snapped
        sizes.append(value)
    return tuple(sizes)


def control_units_of(ctx: AppContext, values: dict, lang: str) -> list:
    """The ControlNet units of a run, their images opened (or refused naming the field)."""
    return units_from(values, lambda name, value, required: _image(ctx, name, value, required, lang))


def _wire(ctx: AppContext, tab: GenerationTab, handler, page_handler, extra_inputs: list,
          page_inputs: list | None = None) -> None:
    """Wire a tab's handlers; both take the control_* parameters after their own (control_units.py)."""
    c = tab.controls
    handler, page_handler = with_control_parameters(handler), with_control_parameters(page_handler)
    units = tab.units.input_list() if tab.units is not None else []
    # The creative accordion (ui/creative.py): its values go after every other input and reach the run as its part.
    tab.creative = creative_accordion(ctx, tab.mode, c, with_hires=tab.mode in ("text_to_image", "ip_adapter"))
    creative_inputs = tab.creative.inputs
    handler, page_handler = with_creative_part(handler, tab.creative), with_creative_part(page_handler, tab.creative)
    tab.handler = handler
    c.prompt.change(lambda text: token_count(ctx, text), c.prompt, c.token_count, trigger_mode="always_last",
                    queue=False, show_progress="hidden", api_visibility="private")
    # Programs call `/<mode>` (api_endpoints.py): finished PNGs, no per-step traffic.
    wire_program_endpoint(ctx, tab.mode, c.request_inputs() + extra_inputs + units + creative_inputs,
                          [c.gallery, c.result], lambda name, value, required: _image(ctx, name, value, required),
                          wrap=lambda fn: with_creative_part(fn, tab.creative))

    def prepare(request: gr.Request = None):
        # Stop works from the click on, also while the run waits for its turn in the queue.
        ctx.engine.expect(owner_of(ctx, request))
        return gr.Button(interactive=True)

    outputs = [c.gallery, c.result, c.progress, c.infotext, c.selected, c.selected_index]
    run = (c.generate.click(prepare, None, c.stop, queue=False, api_visibility="private")
           .then(page_handler, c.request_inputs() + extra_inputs + (page_inputs or []) + units + creative_inputs,
                 outputs,
                 api_name=f"{tab.mode}_live", api_visibility="undocumented", concurrency_id=GPU_QUEUE,
                 concurrency_limit=1, preprocess=False, show_progress="hidden"))
    run.then(lambda: gr.Button(interactive=False), None, c.stop, queue=False, api_visibility="private")

    def stop(request: gr.Request = None):
        # gradio passes the request only to a parameter annotated gr.Request; without it the flag is never set.
        # No `cancels`: the run ends at its next step and hands back what it had (the last preview).
        ctx.engine.stop(owner_of(ctx, request))

    c.stop.click(stop, None, None, queue=False, api_name=f"{tab.mode}_stop", api_visibility="private")
    tab.run_event = run


def text_to_image_tab(ctx: AppContext) -> GenerationTab:
    """Text to image."""
    controls, extra = build_controls("text_to_image", ctx.settings.limits, steps=50, guidance=5.0)
    with extra:
        units = control_accordion(ctx, "text_to_image")
    tab = GenerationTab("text_to_image", controls, units=units)
    tab.examples = _examples(controls, "text_to_image")

    def text_to_image(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler,
                      seed, num_images, request: gr.Request, progress=gr.Progress(), control_values=None):
        """Generate images from a prompt; returns the PNGs and their parameters with concrete seeds."""
        yield from run_request(ctx, GenerationRequest(
            prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
            num_images, controls=control_units_of(ctx, control_values, language(request))), request, progress)

    def page(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
             num_images, request: gr.Request = None, control_values=None):
        def make(lang):
            w, h = snap_request_sizes(ctx, width, height, lang)
            return GenerationRequest(prompt, negative_prompt, w, h, num_inference_steps, guidance_scale,
                                     scheduler, seed, num_images, controls=control_units_of(ctx, control_values, lang))
        yield from page_run(ctx, make, request)

    _wire(ctx, tab, text_to_image, page, [])
    return tab


def image_to_image_tab(ctx: AppContext) -> GenerationTab:
    """Image to image: repaint an uploaded or pasted image."""
    controls, extra = build_controls("image_to_image", ctx.settings.limits, steps=50, guidance=5.0)
    with extra:
        image = gr.Image(label=i18n("init_image"), sources=["upload", "clipboard"], height=320,
                         elem_id="image_to_image-image", **IMAGE_INPUT)
        with gr.Row():
            strength = gr.Slider(0.01, 1.0, value=0.7, step=0.01, label=i18n("strength"),
                                 elem_id="image_to_image-strength")
            resize_mode = gr.Radio([(i18n(f"resize_{mode}"), mode) for mode in RESIZE_MODES], value="crop",
                                   label=i18n("resize_mode"), elem_id="image_to_image-resize")
        units = control_accordion(ctx, "image_to_image")
    tab = GenerationTab("image_to_image", controls, {"image": image}, {"strength": strength},
                        options={"resize_mode": resize_mode}, units=units)
    image.upload(lambda value: size_of_upload(value, ctx.settings.limits), image,
                 [controls.width, controls.height, controls.aspect], queue=False, api_visibility="private",
                 api_name="size_of_upload", preprocess=False)
    tab.examples = _examples(controls, "image_to_image")

    def image_to_image(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler,
                       seed, num_images, image, strength, request: gr.Request, progress=gr.Progress(),
                       control_values=None):
        """Repaint an image guided by a prompt; `strength` 0..1 says how much changes."""
        lang = language(request)
        init = _image(ctx, "image", image, required=True, lang=lang)
        yield from run_request(ctx, GenerationRequest(
            prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
            num_images, init=InitImage(init, strength), controls=control_units_of(ctx, control_values, lang)),
            request, progress)

    def page(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
             num_images, image, strength, resize, request: gr.Request = None, control_values=None):
        def make(lang):
            w, h = snap_request_sizes(ctx, width, height, lang)
            init = _image(ctx, "image", image, required=True, lang=lang)
            if isinstance(w, int) and isinstance(h, int):
                init = resized(init, w, h, resize if resize in RESIZE_MODES else "crop")
            return GenerationRequest(prompt, negative_prompt, w, h, num_inference_steps, guidance_scale,
                                     scheduler, seed, num_images, init=InitImage(init, strength),
                                     controls=control_units_of(ctx, control_values, lang))
        yield from page_run(ctx, make, request)

    _wire(ctx, tab, image_to_image, page, [image, strength], [resize_mode])
    return tab


def ip_request(ctx: AppContext, lang: str, prompt, negative_prompt, width, height, num_inference_steps,
               guidance_scale, scheduler, seed, num_images, ip_adapter_image, ip_adapter_scale, image,
               strength, control_values=None) -> GenerationRequest:
    """An IP-Adapter request: the reference image, and an optional init image."""
    reference = Reference(_image(ctx, "ip_adapter_image", ip_adapter_image, True, lang), ip_adapter_scale)
    init = _image(ctx, "image", image, False, lang)
    return GenerationRequest(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler,
                             seed, num_images, init=InitImage(init, strength) if init is not None else None,
                             reference=reference, controls=control_units_of(ctx, control_values, lang))


def ip_adapter_tab(ctx: AppContext) -> GenerationTab:
    """IP-Adapter: generate from a reference image, with an optional prompt and init image."""
    # Its sampler, steps and guidance agree: upstream's IP-Adapter settings (DPM++ Karras, 25 steps, 6.5).
    controls, extra = build_controls("ip_adapter", ctx.settings.limits, steps=25, guidance=6.5, prompt_lines=2,
                                     scheduler="DPM++ 2M Karras")
    with extra:
        with gr.Row():
            reference = gr.Image(label=i18n("reference_image"), sources=["upload", "clipboard"], height=260,
                                 elem_id="ip_adapter-reference", **IMAGE_INPUT)
            init = gr.Image(label=i18n("optional_init"), sources=["upload", "clipboard"], height=260,
                            elem_id="ip_adapter-image", **IMAGE_INPUT)
        with gr.Row():
            scale = gr.Slider(0.0, 2.0, value=0.5, step=0.05, label=i18n("ip_scale"), elem_id="ip_adapter-scale")
            # Strength only means something with an init image.
            strength = gr.Slider(0.01, 1.0, value=0.7, step=0.01, label=i18n("strength"), interactive=False,
                                 elem_id="ip_adapter-strength")
        units = control_accordion(ctx, "ip_adapter")
    tab = GenerationTab("ip_adapter", controls, {"ip_adapter_image": reference, "image": init},
                        {"ip_adapter_scale": scale, "strength": strength}, units=units)
    init.change(lambda value: gr.Slider(interactive=bool(value)), init, strength, queue=False, preprocess=False,
                show_progress="hidden", api_visibility="private")

    def ip_adapter(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
                   num_images, ip_adapter_image, ip_adapter_scale, image, strength, request: gr.Request,
                   progress=gr.Progress(), control_values=None):
        """Generate images that follow a reference image (IP-Adapter Plus); `image` is an optional init image."""
        yield from run_request(ctx, ip_request(ctx, language(request), prompt, negative_prompt, width, height,
                                               num_inference_steps, guidance_scale, scheduler, seed, num_images,
                                               ip_adapter_image, ip_adapter_scale, image, strength, control_values),
                               request, progress)

    def page(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
             num_images, ip_adapter_image, ip_adapter_scale, image, strength, request: gr.Request = None,
             control_values=None):
        def make(lang):
            w, h = snap_request_sizes(ctx, width, height, lang)
            return ip_request(ctx, lang, prompt, negative_prompt, w, h, num_inference_steps, guidance_scale,
                              scheduler, seed, num_images, ip_adapter_image, ip_adapter_scale, image, strength,
                              control_values)
        yield from page_run(ctx, make, request)

    _wire(ctx, tab, ip_adapter, page, [reference, scale, init, strength])
    return tab
