"""The controls every generation tab shares: prompt, size, sampler, seed, buttons and the gallery."""

from __future__ import annotations

from dataclasses import dataclass, fields

import gradio as gr

from ..config import Limits
from ..schedulers import RECOMMENDED, SCHEDULER_NAMES
from .i18n import i18n

# Sizes around one megapixel (Kolors' native 1024x1024), all multiples of 64.
ASPECT_PRESETS = {
    "1:1": (1024, 1024),
    "4:3": (1152, 896),
    "3:4": (896, 1152),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
}
CUSTOM = "Custom"


@dataclass
class GenerationControls:
    """Handles to the shared components of one generation tab."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    token_count: gr.Markdown
    aspect: gr.Radio
    width: gr.Slider
    height: gr.Slider
    num_inference_steps: gr.Slider
    guidance_scale: gr.Slider
    scheduler: gr.Dropdown
    seed: gr.Number
    random_seed: gr.Button
    reuse_seed: gr.Button
    num_images: gr.Slider
    generate: gr.Button
    stop: gr.Button
    gallery: gr.Gallery
    result: gr.JSON
    selected: gr.JSON
    selected_index: gr.State
    use_settings: gr.Button
    send_i2i: gr.Button
    send_ip: gr.Button

    def request_inputs(self) -> list:
        """The inputs every generate endpoint takes, in the API's order."""
        return [self.prompt, self.negative_prompt, self.width, self.height, self.num_inference_steps,
                self.guidance_scale, self.scheduler, self.seed, self.num_images]


REQUEST_FIELDS = ["prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale",
                  "scheduler", "seed", "num_images"]


def aspect_for(width: int, height: int) -> str:
    """The preset name for a size, or Custom."""
    for name, size in ASPECT_PRESETS.items():
        if size == (width, height):
            return name
    return CUSTOM


def build_controls(mode: str, limits: Limits, steps: int, guidance: float, prompt_lines: int = 3) -> tuple:
    """Lay out the shared controls; returns (controls, column for mode-specific inputs)."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            prompt = gr.Textbox(label=i18n("prompt"), placeholder=i18n("prompt_placeholder"), lines=prompt_lines,
                                max_length=limits.max_prompt_chars, elem_id=f"{mode}-prompt")
            token_count = gr.Markdown(f"0 / {limits.max_prompt_tokens}", elem_id=f"{mode}-tokens")
            negative_prompt = gr.Textbox(label=i18n("negative_prompt"), lines=1,
                                         max_length=limits.max_prompt_chars, elem_id=f"{mode}-negative")
            extra = gr.Column()
            aspect = gr.Radio([*ASPECT_PRESETS, CUSTOM], value="1:1", label=i18n("aspect"),
                              elem_id=f"{mode}-aspect")
            with gr.Row():
                width = gr.Slider(limits.min_size, limits.max_size, value=1024, step=8, label=i18n("width"),
                                  elem_id=f"{mode}-width")
                height = gr.Slider(limits.min_size, limits.max_size, value=1024, step=8, label=i18n("height"),
                                   elem_id=f"{mode}-height")
            with gr.Row():
                scheduler = gr.Dropdown(list(SCHEDULER_NAMES), value="Euler", label=i18n("scheduler"),
                                        elem_id=f"{mode}-scheduler")
                num_inference_steps = gr.Slider(1, limits.max_steps, value=steps, step=1, label=i18n("steps"),
                                                elem_id=f"{mode}-steps")
                guidance_scale = gr.Slider(0, limits.max_guidance, value=guidance, step=0.1,
                                           label=i18n("guidance"), elem_id=f"{mode}-guidance")
            with gr.Row():
                seed = gr.Number(-1, label=i18n("seed"), precision=0, minimum=-1, maximum=2**32 - 1, scale=2,
                                 elem_id=f"{mode}-seed")
                # Stacked small buttons: in the row itself they stretch to the seed box's height.
                with gr.Column(scale=1, min_width=140):
                    random_seed = gr.Button(i18n("random_seed"), size="sm", elem_id=f"{mode}-random-seed")
                    reuse_seed = gr.Button(i18n("reuse_seed"), size="sm", elem_id=f"{mode}-reuse-seed")
                num_images = gr.Slider(1, limits.max_images, value=1, step=1, label=i18n("num_images"), scale=2,
                                       elem_id=f"{mode}-num-images")
        with gr.Column(scale=6):
            with gr.Row():
                generate = gr.Button(i18n("generate"), variant="primary", elem_id=f"{mode}-generate")
                stop = gr.Button(i18n("stop"), variant="stop", elem_id=f"{mode}-stop")
            gallery = gr.Gallery(label=i18n("gallery"), format="png", columns=2, height=520, interactive=False,
                                 elem_id=f"{mode}-gallery")
            with gr.Row():
                use_settings = gr.Button(i18n("use_settings"), size="sm", elem_id=f"{mode}-use-settings")
                send_i2i = gr.Button(i18n("send_i2i"), size="sm", elem_id=f"{mode}-send-i2i")
                send_ip = gr.Button(i18n("send_ip"), size="sm", elem_id=f"{mode}-send-ip")
            selected = gr.JSON(label=i18n("parameters"), elem_id=f"{mode}-selected")
            result = gr.JSON(visible=False)
            selected_index = gr.State(0)
    controls = GenerationControls(prompt, negative_prompt, token_count, aspect, width, height, num_inference_steps,
                                  guidance_scale, scheduler, seed, random_seed, reuse_seed, num_images, generate,
                                  stop, gallery, result, selected, selected_index, use_settings, send_i2i, send_ip)
    _wire_local_events(controls)
    return controls, extra


def _wire_local_events(c: GenerationControls) -> None:
    """Events that touch only this tab's controls and need no model."""
    c.aspect.change(lambda name: [gr.skip()] * 2 if name == CUSTOM else list(ASPECT_PRESETS[name]),
                    c.aspect, [c.width, c.height], queue=False, api_visibility="private")
    c.scheduler.input(lambda name: list(RECOMMENDED[name]), c.scheduler,
                      [c.num_inference_steps, c.guidance_scale], queue=False, api_visibility="private")
    c.random_seed.click(lambda: -1, None, c.seed, queue=False, api_visibility="private")
    c.reuse_seed.click(last_seed, c.result, c.seed, queue=False, api_visibility="private")
    c.gallery.select(selected_parameters, c.result, [c.selected, c.selected_index], queue=False,
                     api_visibility="private")
    for size in (c.width, c.height):
        size.input(aspect_for, [c.width, c.height], c.aspect, queue=False, api_visibility="private")


def last_seed(result: dict | None):
    """The seed of the first image of the last run, or no change."""
    images = (result or {}).get("images") or []
    return images[0]["seed"] if images else gr.skip()


def selected_parameters(result: dict | None, event: gr.SelectData):
    """The parameters and index of the gallery image the user clicked."""
    images = (result or {}).get("images") or []
    index = event.index if isinstance(event.index, int) and 0 <= event.index < len(images) else 0
    return (images[index] if images else None), index


def selected_image(gallery: list | None, index: int) -> str | None:
    """The file of the selected gallery image (the first one if none was clicked)."""
    if not gallery:
        return None
    item = gallery[index] if 0 <= index < len(gallery) else gallery[0]
    return item[0] if isinstance(item, (tuple, list)) else item


def control_updates(controls: GenerationControls, parameters: dict) -> dict:
    """Component -> new value for every shared field found in saved parameters."""
    updates = {}
    for name in REQUEST_FIELDS:
        if name in parameters and parameters[name] is not None:
            updates[getattr(controls, name)] = parameters[name]
    if "width" in parameters and "height" in parameters:
        updates[controls.aspect] = aspect_for(parameters["width"], parameters["height"])
    return updates


def all_components(controls: GenerationControls) -> list:
    """Every component of the controls, for events that may update any of them."""
    return [getattr(controls, f.name) for f in fields(controls)]
