"""The endpoints for programs (gradio_client, MCP agents): finished PNGs and JSON, no per-step traffic.

The page's Generate buttons run their own events (`<mode>_live`, with progress and previews); these run
the same requests in the same GPU queue. Their docstrings are what MCP clients show to agents.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from kolors_app.core.request import GenerationRequest, InitImage, Inpaint, Reference
from kolors_app.ui.control_units import CONTROL_ARGS, units_from, with_control_parameters
from kolors_app.ui.runner import AppContext, run_for_program

GPU_QUEUE = "gpu"  # the concurrency id every model run shares (generate_tabs.GPU_QUEUE)

# What every tool's description says about the model, for agents choosing how to call it.
ABOUT_KOLORS = (
    "Kolors (Kuaishou) is a bilingual text-to-image model: prompts in Chinese or English (or mixed) work "
    "equally well, and it can draw Chinese text in images. It is good at photorealistic portraits, products, "
    "food and scenes, at Chinese and Western art styles, and at following long detailed prompts (up to 256 "
    "tokens are read). Native size is 1024x1024; sizes near one megapixel work best."
)
LIMITS = ("Width and height are multiples of 8 from {min_size} to {max_size}; steps 1 to {max_steps}; guidance 0 to "
          "{max_guidance:g}; 1 to {max_images} images; a prompt is at most {max_prompt_chars} characters. A bad value "
          "is refused with an error naming the parameter.")
RETURNS = """
    Returns:
        The images (PNG files that carry their parameters in a `parameters` text chunk) and a JSON object with the \
exact parameters of every image, including its concrete seed."""
COMMON_ARGS = """
    Args:
        prompt: What to draw, in Chinese or English: subject, setting, style, lighting, camera. Example: \
"一张瓢虫的照片，微距，变焦，高质量" or "a cinematic photo of a red fox in the snow, golden hour".
        negative_prompt: What to avoid, e.g. "blurry, low quality, watermark". Empty by default.
        width: Image width in pixels, a multiple of 8 (default 1024).
        height: Image height in pixels, a multiple of 8 (default 1024).
        num_inference_steps: Denoising steps; more is slower and finer. 25 with the DPM++ samplers, 50 with Euler.
        guidance_scale: How closely to follow the prompt; 5.0 for most samplers, 6.5 with DPM++ 2M Karras.
        scheduler: Sampler: "Euler" (default), "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ 2M SDE Karras", \
"EDM DPM++ 2M", "UniPC" or "DDIM".
        seed: -1 for a random seed, or 0 to 4294967295 to repeat an image exactly; image i of a batch uses seed + i.
        num_images: How many images to make in this call (default 1)."""


INPAINT_ARGS = """
        image: The picture to repaint (required).
        mask: Where to repaint: white = repaint, black = keep; the size of `image`. Required unless outpainting.
        strength: How much of the masked area changes, above 0 up to 1 (default 0.999, as upstream).
        mask_blur: Blur of the mask's edge in pixels, 0 to 64 (default 4; 0 = none).
        inpaint_area: "whole" (default: the whole picture at about width x height) or "masked" (only the area around \
the mask, at full resolution, pasted back).
        inpaint_padding: With "masked": pixels of context around the mask, 0 to 256 (default 32).
        keep_unmasked: Keep every pixel outside the mask exactly as it was (default true).
        inpaint_model: "inpainting" (default: Kolors-Inpainting's U-Net) or "base" (the base U-Net; also what runs \
when the inpainting model is not available, with a warning).
        outpaint_left: Outpainting: pixels added on the left and filled (default 0); likewise outpaint_right, \
outpaint_up, outpaint_down. The mask then may be left out.
        outpaint_right: Pixels added on the right (default 0).
        outpaint_up: Pixels added at the top (default 0).
        outpaint_down: Pixels added at the bottom (default 0)."""


def _describe(fn: Callable, summary: str, limits, extra_args: str = "") -> Callable:
    fn.__doc__ = (f"{summary} {ABOUT_KOLORS} {LIMITS.format(**vars(limits))}\n{COMMON_ARGS}{extra_args}"
                  f"{CONTROL_ARGS}\n{RETURNS}\n")
    return with_control_parameters(fn)


def inpaint_request(image_of: Callable, prompt, negative_prompt, width, height, num_inference_steps, guidance_scale,
                    scheduler, seed, num_images, image, mask, strength, mask_blur, inpaint_area, inpaint_padding,
                    keep_unmasked, inpaint_model, outpaint_left, outpaint_right, outpaint_up, outpaint_down,
                    control_values) -> GenerationRequest:
    """An inpainting request: the image, its mask (or outpainted sides) and the ControlNet units."""
    init = InitImage(image_of("image", image, True), strength)
    part = Inpaint(image_of("mask", mask, False), mask_blur, inpaint_area, inpaint_padding, keep_unmasked,
                   inpaint_model, (outpaint_left, outpaint_right, outpaint_up, outpaint_down))
    return GenerationRequest(prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler,
                             seed, num_images, init=init, inpaint=part, controls=units_from(control_values, image_of))


def program_endpoint(ctx: AppContext, mode: str, image_of: Callable) -> Callable:
    """The endpoint function of one mode; `image_of(name, value, required)` opens an uploaded image safely."""
    limits = ctx.settings.limits
    if mode == "text_to_image":
        async def text_to_image(prompt, negative_prompt=None, width=1024, height=1024, num_inference_steps=50,
                                guidance_scale=5.0, scheduler="Euler", seed=-1, num_images=1,
                                request: gr.Request = None, control_values=None):
            return await run_for_program(ctx, GenerationRequest(
                prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
                num_images, controls=units_from(control_values, image_of)), request)

        fn = _describe(text_to_image, "Generate images from a text prompt with Kolors.", limits)
    elif mode == "image_to_image":
        async def image_to_image(prompt, negative_prompt=None, width=1024, height=1024, num_inference_steps=50,
                                 guidance_scale=5.0, scheduler="Euler", seed=-1, num_images=1, image=None,
                                 strength=0.7, request: gr.Request = None, control_values=None):
            init = InitImage(image_of("image", image, True), strength)
            return await run_for_program(ctx, GenerationRequest(
                prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
                num_images, init=init, controls=units_from(control_values, image_of)), request)

        fn = _describe(image_to_image, "Repaint an existing image guided by a prompt with Kolors.", limits, """
        image: The picture to start from (required). It is resized to width x height.
        strength: How much to change, above 0 up to 1: 0.3 keeps the composition, 0.7 (default) repaints a lot, 1 \
ignores the picture.""")
    elif mode == "inpaint":
        async def inpaint(prompt=None, negative_prompt=None, width=1024, height=1024, num_inference_steps=25,
                          guidance_scale=6.0, scheduler="Euler", seed=-1, num_images=1, image=None, mask=None,
                          strength=0.999, mask_blur=4, inpaint_area="whole", inpaint_padding=32, keep_unmasked=True,
                          inpaint_model="inpainting", outpaint_left=0, outpaint_right=0, outpaint_up=0,
                          outpaint_down=0, request: gr.Request = None, control_values=None):
            return await run_for_program(ctx, inpaint_request(
                image_of, prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler,
                seed, num_images, image, mask, strength, mask_blur, inpaint_area, inpaint_padding, keep_unmasked,
                inpaint_model, outpaint_left, outpaint_right, outpaint_up, outpaint_down, control_values), request)

        fn = _describe(inpaint, "Repaint part of an image where a mask is white (inpainting), or extend the "
                                "picture on any side (outpainting), with Kolors-Inpainting.", limits, INPAINT_ARGS)
    else:
        async def ip_adapter(prompt=None, negative_prompt=None, width=1024, height=1024, num_inference_steps=25,
                             guidance_scale=6.5, scheduler="Euler", seed=-1, num_images=1, ip_adapter_image=None,
                             ip_adapter_scale=0.5, image=None, strength=0.7, request: gr.Request = None,
                             control_values=None):
            reference = Reference(image_of("ip_adapter_image", ip_adapter_image, True), ip_adapter_scale)
            init = image_of("image", image, False)
            return await run_for_program(ctx, GenerationRequest(
                prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
                num_images, init=InitImage(init, strength) if init is not None else None, reference=reference,
                controls=units_from(control_values, image_of)), request)

        fn = _describe(ip_adapter, "Generate images that follow a reference image (Kolors IP-Adapter Plus): its "
                                   "subject, style and colours, optionally steered by a prompt.", limits, """
        ip_adapter_image: The reference picture (required).
        ip_adapter_scale: How strongly to follow the reference, 0 to 2 (default 0.5; 1 copies it closely).
        image: An optional picture to start from, as in image-to-image; none by default.
        strength: With `image`: how much of it to change, above 0 up to 1 (default 0.7).""")
    return fn


def wire_program_endpoint(ctx: AppContext, mode: str, inputs: list, outputs: list, image_of: Callable,
                          wrap: Callable = lambda fn: fn):
    """Register the endpoint `/<mode>` for programs on a hidden trigger; `wrap` adds parameters (ui/creative.py)."""
    trigger = gr.Button(visible=False, elem_id=f"{mode}-api")
    # preprocess=False: every value reaches validate() as sent, so each bad one gets an error naming its field.
    return trigger.click(wrap(program_endpoint(ctx, mode, image_of)), inputs, outputs, api_name=mode,
                         concurrency_id=GPU_QUEUE, concurrency_limit=1, preprocess=False, show_progress="hidden")
