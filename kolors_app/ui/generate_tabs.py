"""The three generation tabs; each one's handler is a public, queued API endpoint of the same name."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import gradio as gr
from PIL import Image

from ..images import load_image, size_for
from ..params import GenerationRequest, InitImage, Reference, ValidationError
from ..prompts import load_examples
from .control_units import control_accordion, with_control_parameters
from .controls import GenerationControls, aspect_for, build_controls
from .i18n import i18n
from .runner import AppContext, as_text, run_request, session_of

log = logging.getLogger(__name__)
# Every event that runs the model shares this id, so the GPU runs one request at a time.
GPU_QUEUE = "gpu"
# image_mode=None: gradio hands over the uploaded file as it is; with a mode it would decode and convert every
# upload (a 100-megapixel PNG of 400 kB takes 600 MB) before load_image's limits could refuse it.
IMAGE_INPUT = {"type": "filepath", "image_mode": None}


@dataclass
class GenerationTab:
    """A built generation tab: its shared controls plus its own inputs."""

    mode: str
    controls: GenerationControls
    images: dict[str, gr.Image] = field(default_factory=dict)
    sliders: dict[str, gr.Slider] = field(default_factory=dict)
    run_event: object = None


def _image(ctx: AppContext, name: str, value: str | dict | None, required: bool):
    """Open an uploaded image safely, or refuse it naming the field."""
    # The generate events skip gradio's preprocessing (which decodes and converts an image before any limit
    # applies), so the value is gradio's file payload; direct calls pass a path.
    source = (value.get("path") or value.get("url")) if isinstance(value, dict) else value
    if not source:
        if required:
            raise gr.Error(f"{name}: an image is required", title="Invalid input")
        return None
    try:
        return load_image(source, ctx.settings.limits, field=name, allowed_roots=[gr.utils.get_upload_folder()])
    except ValidationError as error:
        raise gr.Error(as_text(str(error)), title="Invalid input") from None


def _loader(ctx: AppContext):
    """_image for optional images, as the control units take it: load_image(field, value)."""
    return lambda name, value: _image(ctx, name, value, required=False)


def _examples(controls: GenerationControls, mode: str) -> None:
    """A table of the curated prompts; a click fills the prompt boxes."""
    rows = [[item["category"], item["prompt"], item.get("negative_prompt", "")] for item in load_examples()]
    if not rows:
        return
    table = gr.Dataset(components=[gr.Textbox(visible=False)] * 3, samples=rows, label=i18n("examples"),
                       headers=["Category", "Prompt", "Negative prompt"], samples_per_page=8,
                       elem_id=f"{mode}-examples")
    table.click(lambda row: (row[1], row[2]), table, [controls.prompt, controls.negative_prompt], queue=False,
                api_visibility="private")


def size_of_upload(path: str | None):
    """Width, height and preset matching an uploaded image's aspect ratio, at about one megapixel."""
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = size_for(image.size)
    except (OSError, ValueError, TypeError):  # unreadable: the generate handler reports it properly
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


def _wire(ctx: AppContext, tab: GenerationTab, handler, extra_inputs: list) -> None:
    c = tab.controls
    c.prompt.change(lambda text: token_count(ctx, text), c.prompt, c.token_count, trigger_mode="always_last",
                    queue=False, show_progress="hidden", api_visibility="private")
    # preprocess=False: every value reaches validate() as sent, so each bad one gets an error naming its field.
    run = c.generate.click(handler, c.request_inputs() + extra_inputs, [c.gallery, c.result],
                           api_name=tab.mode, concurrency_id=GPU_QUEUE, concurrency_limit=1, preprocess=False)

    def stop(request: gr.Request):
        # gradio passes the request only to a parameter annotated gr.Request; without it the flag is never set.
        ctx.runs.stop(session_of(request))

    c.stop.click(stop, None, None, cancels=[run], queue=False, api_visibility="private")
    tab.run_event = run


def text_to_image_tab(ctx: AppContext) -> GenerationTab:
    """Text to image."""
    controls, extra = build_controls("text_to_image", ctx.settings.limits, steps=50, guidance=5.0)
    with extra:
        units = control_accordion("text_to_image")
    tab = GenerationTab("text_to_image", controls, sliders=units.restorable())
    _examples(controls, "text_to_image")

    def text_to_image(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler,
                      seed, num_images, request: gr.Request, progress=gr.Progress(), controls=()):
        """Generate images from a prompt (ControlNet units: control_* parameters); PNGs and their parameters."""
        yield from run_request(ctx, GenerationRequest(
            prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
            num_images, controls=list(controls)), request, progress)

    _wire(ctx, tab, with_control_parameters(text_to_image, _loader(ctx)), units.input_list())
    return tab


def image_to_image_tab(ctx: AppContext) -> GenerationTab:
    """Image to image: repaint an uploaded or pasted image."""
    controls, extra = build_controls("image_to_image", ctx.settings.limits, steps=50, guidance=5.0)
    with extra:
        image = gr.Image(label=i18n("init_image"), sources=["upload", "clipboard"], height=320,
                         elem_id="image_to_image-image", **IMAGE_INPUT)
        strength = gr.Slider(0.01, 1.0, value=0.7, step=0.01, label=i18n("strength"),
                             elem_id="image_to_image-strength")
        units = control_accordion("image_to_image")
    tab = GenerationTab("image_to_image", controls, {"image": image}, {"strength": strength, **units.restorable()})
    image.upload(size_of_upload, image, [controls.width, controls.height, controls.aspect], queue=False,
                 api_visibility="private")
    _examples(controls, "image_to_image")

    def image_to_image(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler,
                       seed, num_images, image, strength, request: gr.Request, progress=gr.Progress(), controls=()):
        """Repaint an image guided by a prompt; `strength` 0..1 says how much changes."""
        init = _image(ctx, "image", image, required=True)
        yield from run_request(ctx, GenerationRequest(
            prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
            num_images, init=InitImage(init, strength), controls=list(controls)), request, progress)

    _wire(ctx, tab, with_control_parameters(image_to_image, _loader(ctx)), [image, strength] + units.input_list())
    return tab


def ip_adapter_tab(ctx: AppContext) -> GenerationTab:
    """IP-Adapter: generate from a reference image, with an optional prompt and init image."""
    controls, extra = build_controls("ip_adapter", ctx.settings.limits, steps=25, guidance=6.5, prompt_lines=2)
    with extra:
        with gr.Row():
            reference = gr.Image(label=i18n("reference_image"), sources=["upload", "clipboard"], height=260,
                                 elem_id="ip_adapter-reference", **IMAGE_INPUT)
            init = gr.Image(label=i18n("optional_init"), sources=["upload", "clipboard"], height=260,
                            elem_id="ip_adapter-image", **IMAGE_INPUT)
        with gr.Row():
            scale = gr.Slider(0.0, 2.0, value=0.5, step=0.05, label=i18n("ip_scale"), elem_id="ip_adapter-scale")
            strength = gr.Slider(0.01, 1.0, value=0.7, step=0.01, label=i18n("strength"),
                                 elem_id="ip_adapter-strength")
        units = control_accordion("ip_adapter")
    tab = GenerationTab("ip_adapter", controls, {"ip_adapter_image": reference, "image": init},
                        {"ip_adapter_scale": scale, "strength": strength, **units.restorable()})

    def ip_adapter(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
                   num_images, ip_adapter_image, ip_adapter_scale, image, strength, request: gr.Request,
                   progress=gr.Progress(), controls=()):
        """Generate images that follow a reference image (IP-Adapter Plus); `image` is an optional init image."""
        reference = Reference(_image(ctx, "ip_adapter_image", ip_adapter_image, required=True), ip_adapter_scale)
        init = _image(ctx, "image", image, required=False)
        yield from run_request(ctx, GenerationRequest(
            prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
            num_images, init=InitImage(init, strength) if init is not None else None, reference=reference,
            controls=list(controls)), request, progress)

    _wire(ctx, tab, with_control_parameters(ip_adapter, _loader(ctx)), [reference, scale, init, strength]
          + units.input_list())
    return tab
