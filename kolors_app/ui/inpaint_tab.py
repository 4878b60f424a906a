"""The Inpaint tab: repaint where a painted or uploaded mask is white, or extend the canvas (outpainting)."""

from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image

from ..params import INPAINT_AREAS, INPAINT_MODELS, GenerationRequest, Inpaint, InitImage
from .control_units import control_accordion, with_control_parameters
from .controls import build_controls
from .generate_tabs import IMAGE_INPUT, GenerationTab, _image, _loader, _wire, size_of_upload
from .i18n import i18n
from .runner import AppContext, run_request


def painted_mask(editor: dict | None):
    """The mask painted in the editor (any brush stroke = white), as an image for the mask input."""
    layers = (editor or {}).get("layers") or []
    if not layers:
        return gr.skip()
    alpha = None
    for layer in layers:
        pixels = np.asarray(Image.open(layer) if isinstance(layer, str) else layer.convert("RGBA"))
        painted = pixels[..., 3] > 0 if pixels.ndim == 3 and pixels.shape[-1] == 4 else pixels.max(axis=-1) > 0
        alpha = painted if alpha is None else alpha | painted
    return Image.fromarray(np.where(alpha, 255, 0).astype(np.uint8))


def inpaint_tab(ctx: AppContext) -> GenerationTab:
    """Inpainting and outpainting (upstream defaults: strength 0.999, guidance 6.0, 25 steps)."""
    controls, extra = build_controls("inpaint", ctx.settings.limits, steps=25, guidance=6.0, prompt_lines=2)
    with extra:
        with gr.Row():
            image = gr.Image(label=i18n("inpaint_image"), sources=["upload", "clipboard"], height=260,
                             elem_id="inpaint-image", **IMAGE_INPUT)
            mask = gr.Image(label=i18n("inpaint_mask"), sources=["upload", "clipboard"], height=260,
                            elem_id="inpaint-mask", **IMAGE_INPUT)
        editor = gr.ImageEditor(label=i18n("inpaint_paint"), type="pil", sources=[], height=360,
                                brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=24),
                                eraser=gr.Eraser(default_size=24), elem_id="inpaint-editor")
        with gr.Row():
            strength = gr.Slider(0.01, 1.0, value=0.999, step=0.001, label=i18n("strength"), elem_id="inpaint-strength")
            mask_blur = gr.Slider(0, 64, value=4, step=1, label=i18n("mask_blur"), elem_id="inpaint-mask-blur")
        with gr.Row():
            area = gr.Radio(list(INPAINT_AREAS), value="whole", label=i18n("inpaint_area"), elem_id="inpaint-area")
            padding = gr.Slider(0, 256, value=32, step=4, label=i18n("inpaint_padding"), elem_id="inpaint-padding")
            model = gr.Radio(list(INPAINT_MODELS), value="inpainting", label=i18n("inpaint_model"),
                             elem_id="inpaint-model")
            keep = gr.Checkbox(True, label=i18n("keep_unmasked"), elem_id="inpaint-keep")
        with gr.Row():
            sides = [gr.Number(0, label=i18n(f"outpaint_{side}"), precision=0, minimum=0, step=64,
                               elem_id=f"inpaint-outpaint-{side}") for side in ("left", "right", "up", "down")]
        units = control_accordion("inpaint")
    named = {"strength": strength, "mask_blur": mask_blur, "inpaint_area": area, "inpaint_padding": padding,
             "inpaint_model": model, "keep_unmasked": keep,
             **{f"outpaint_{side}": box for side, box in zip(("left", "right", "up", "down"), sides)}}
    tab = GenerationTab("inpaint", controls, {"image": image, "mask": mask}, {**named, **units.restorable()})
    image.upload(size_of_upload, image, [controls.width, controls.height, controls.aspect], queue=False,
                 api_visibility="private")
    # The uploaded image becomes the editor's background; strokes painted on it become the mask input.
    image.change(lambda path: gr.ImageEditor(value={"background": path, "layers": [], "composite": path}),
                 image, editor, queue=False, api_visibility="private", preprocess=True)
    editor.change(painted_mask, editor, mask, queue=False, api_visibility="private")

    def inpaint(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
                num_images, image, mask, strength=0.999, mask_blur=4, inpaint_area="whole", inpaint_padding=32,
                keep_unmasked=True, inpaint_model="inpainting", outpaint_left=0, outpaint_right=0, outpaint_up=0,
                outpaint_down=0, request: gr.Request = None, progress=gr.Progress(), controls=()):
        """Repaint where `mask` is white (upstream defaults: strength 0.999, guidance 6.0, 25 steps); outpaint_*
        extend the canvas first (then `mask` may be left out)."""
        init = _image(ctx, "image", image, required=True)
        part = Inpaint(_image(ctx, "mask", mask, required=False), mask_blur, inpaint_area, inpaint_padding,
                       keep_unmasked, inpaint_model, (outpaint_left, outpaint_right, outpaint_up, outpaint_down))
        yield from run_request(ctx, GenerationRequest(
            prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
            num_images, init=InitImage(init, strength), inpaint=part, controls=list(controls)), request, progress)

    _wire(ctx, tab, with_control_parameters(inpaint, _loader(ctx)),
          [image, mask, strength, mask_blur, area, padding, keep, model, *sides] + units.input_list())
    return tab
