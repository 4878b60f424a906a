"""The Inpaint tab: repaint where a painted or uploaded mask is white, or extend the canvas (outpainting).

Its handler is the public `/inpaint` endpoint's twin (api_endpoints.py); the page's own run also reads the mask
painted in the editor when no mask file is given.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image

from kolors_app.media.image_guard import open_image
from kolors_app.media.images import check_pixels, header_size, read_allowed_file
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import INPAINT_AREAS, INPAINT_MODELS, OUTPAINT_SIDES
from kolors_app.ui.api_endpoints import inpaint_request
from kolors_app.ui.control_units import control_accordion
from kolors_app.ui.controls import build_controls
from kolors_app.ui.generate_tabs import (IMAGE_INPUT, GenerationTab, _examples, _image, _wire, page_run, size_of_upload,
                            snap_request_sizes)
from kolors_app.ui.i18n import i18n, language, tr
from kolors_app.ui.runner import AppContext, as_text, run_request

BRUSH_PIXELS = 32


def painted_mask(ctx: AppContext, editor, size: tuple[int, int], lang: str = "en") -> Image.Image | None:
    """The mask painted in the editor (every stroke is white), at `size`; None when nothing is painted."""
    layers = (editor or {}).get("layers") if isinstance(editor, dict) else None
    painted = None
    for layer in layers or []:
        path = (layer.get("path") or layer.get("url")) if isinstance(layer, dict) else layer
        if not isinstance(path, str):
            continue
        try:
            # The strokes' alpha is the mask: the generic loader would flatten it onto white.
            data = read_allowed_file(path, [gr.utils.get_upload_folder()], ctx.settings.limits.max_upload_bytes,
                                     "mask")
            with open_image(data, ctx.settings.limits, "mask") as picture:
                check_pixels(picture.size, ctx.settings.limits, "mask")
                alpha = np.asarray(picture.convert("RGBA").getchannel("A")) > 0
        except ValidationError as error:
            raise gr.Error(as_text(str(error)), title=tr(lang, "title_invalid_input")) from None
        if painted is None or painted.shape == alpha.shape:
            painted = alpha if painted is None else painted | alpha
    if painted is None or not painted.any():
        return None
    mask = Image.fromarray(np.where(painted, 255, 0).astype(np.uint8), "L")
    return mask if mask.size == size else mask.resize(size, Image.Resampling.NEAREST)


def editor_background(limits, value):
    """The uploaded image becomes the editor's background, on a canvas of its size (so that strokes line up)."""
    path = (value.get("path") or value.get("url")) if isinstance(value, dict) else value
    if not path:
        return gr.ImageEditor(value=None)
    try:
        size = header_size(path, limits, allowed_roots=[gr.utils.get_upload_folder()])
    except (ValidationError, TypeError):  # unreadable: the generate handler reports it properly
        return gr.skip()
    return gr.ImageEditor(value={"background": path, "layers": [], "composite": path}, canvas_size=tuple(size))


def inpaint_tab(ctx: AppContext) -> GenerationTab:
    """Inpainting and outpainting (upstream defaults: strength 0.999, guidance 6.0, 25 steps)."""
    limits = ctx.settings.limits
    controls, extra = build_controls("inpaint", limits, steps=25, guidance=6.0, prompt_lines=2)
    with extra:
        with gr.Row():
            image = gr.Image(label=i18n("inpaint_image"), sources=["upload", "clipboard"], height=240,
                             elem_id="inpaint-image", **IMAGE_INPUT)
            mask = gr.Image(label=i18n("inpaint_mask"), sources=["upload", "clipboard"], height=240,
                            elem_id="inpaint-mask", **IMAGE_INPUT)
        editor = gr.ImageEditor(label=i18n("inpaint_paint"), type="filepath", sources=[], height=420,
                                format="png", layers=False, transforms=[],
                                brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=BRUSH_PIXELS),
                                eraser=gr.Eraser(default_size=BRUSH_PIXELS), placeholder=i18n("inpaint_placeholder"),
                                elem_id="inpaint-editor")
        gr.Markdown(i18n("inpaint_help"), elem_classes="studio-note")
        with gr.Row():
            strength = gr.Slider(0.01, 1.0, value=0.999, step=0.001, label=i18n("strength"),
                                 elem_id="inpaint-strength")
            mask_blur = gr.Slider(0, 64, value=4, step=1, label=i18n("mask_blur"), elem_id="inpaint-mask-blur")
        with gr.Row():
            area = gr.Radio([(i18n(f"area_{name}"), name) for name in INPAINT_AREAS], value="whole",
                            label=i18n("inpaint_area"), elem_id="inpaint-area")
            padding = gr.Slider(0, 256, value=32, step=4, label=i18n("inpaint_padding"), elem_id="inpaint-padding")
        with gr.Row():
            model = gr.Radio([(i18n(f"model_{name}"), name) for name in INPAINT_MODELS], value="inpainting",
                             label=i18n("inpaint_model"), elem_id="inpaint-model")
            keep = gr.Checkbox(True, label=i18n("keep_unmasked"), elem_id="inpaint-keep")
        with gr.Accordion(i18n("outpaint"), open=False, elem_id="inpaint-outpaint"):
            with gr.Row():
                sides = [gr.Number(0, label=i18n(f"outpaint_{side}"), precision=0, minimum=0,
                                   maximum=limits.max_size, step=64, elem_id=f"inpaint-outpaint-{side}")
                         for side in OUTPAINT_SIDES]
        units = control_accordion(ctx, "inpaint")
    tab = GenerationTab("inpaint", controls, {"image": image, "mask": mask},
                        {"strength": strength, "mask_blur": mask_blur, "inpaint_padding": padding,
                         "inpaint_area": area, "inpaint_model": model, "keep_unmasked": keep},
                        units=units, restored={f"outpaint_{side}": box for side, box in zip(OUTPAINT_SIDES, sides)})
    image.upload(lambda value: size_of_upload(value, limits), image, [controls.width, controls.height, controls.aspect],
                 queue=False, preprocess=False, api_visibility="private")
    image.change(lambda value: editor_background(limits, value), image, editor, queue=False, preprocess=False,
                 show_progress="hidden", api_visibility="private")
    tab.examples = _examples(controls, "inpaint")

    def inpaint(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
                num_images, image, mask, strength=0.999, mask_blur=4, inpaint_area="whole", inpaint_padding=32,
                keep_unmasked=True, inpaint_model="inpainting", outpaint_left=0, outpaint_right=0, outpaint_up=0,
                outpaint_down=0, request: gr.Request = None, progress=gr.Progress(), control_values=None):
        """Repaint where `mask` is white; outpaint_* extend the canvas first (then `mask` may be left out)."""
        lang = language(request)
        yield from run_request(ctx, inpaint_request(
            lambda name, value, required: _image(ctx, name, value, required, lang), prompt, negative_prompt,
            width, height, num_inference_steps, guidance_scale, scheduler, seed, num_images, image, mask, strength,
            mask_blur, inpaint_area, inpaint_padding, keep_unmasked, inpaint_model, outpaint_left, outpaint_right,
            outpaint_up, outpaint_down, control_values), request, progress)

    def page(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
             num_images, image, mask, strength, mask_blur, inpaint_area, inpaint_padding, keep_unmasked,
             inpaint_model, outpaint_left, outpaint_right, outpaint_up, outpaint_down, painted,
             request: gr.Request = None, control_values=None):
        def make(lang):
            w, h = snap_request_sizes(ctx, width, height, lang)
            opened = {}

            def image_of(name, value, required):
                if name == "mask" and not value:  # no mask file: the strokes painted in the editor
                    return painted_mask(ctx, painted, opened["image"].size, lang) if "image" in opened else None
                opened[name] = _image(ctx, name, value, required, lang)
                return opened[name]

            return inpaint_request(image_of, prompt, negative_prompt, w, h, num_inference_steps, guidance_scale,
                                   scheduler, seed, num_images, image, mask, strength, mask_blur, inpaint_area,
                                   inpaint_padding, keep_unmasked, inpaint_model, outpaint_left, outpaint_right,
                                   outpaint_up, outpaint_down, control_values)
        yield from page_run(ctx, make, request)

    _wire(ctx, tab, inpaint, page, [image, mask, strength, mask_blur, area, padding, keep, model, *sides], [editor])
    return tab
