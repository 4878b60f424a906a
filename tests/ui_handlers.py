"""The UI built but not launched: finding its wired handlers, calling them as gradio would, reading what they give."""

from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

SMALL = dict(width=256, height=256, guidance_scale=5.0, scheduler="Euler")
REQUEST_PARAMETERS = ["prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale",
                      "scheduler", "seed", "num_images"]
# Every endpoint ends with three ControlNet units: control_type ... control_high_threshold, then _2 and _3.
CONTROL_PARAMETERS = [f"control_{name}{suffix}" for suffix in ("", "_2", "_3")
                      for name in ("type", "image", "preprocess", "scale", "start", "end", "low_threshold",
                                   "high_threshold")]
INPAINT_PARAMETERS = ["image", "mask", "strength", "mask_blur", "inpaint_area", "inpaint_padding", "keep_unmasked",
                      "inpaint_model", "outpaint_left", "outpaint_right", "outpaint_up", "outpaint_down"]
# Then the creative accordion's (ui/creative.py); the hires fix only where a first pass is made from text.
CREATIVE_PARAMETERS = ["styles", "hires_fix", "hires_upscaler", "hires_upscale", "hires_steps",
                       "hires_denoising_strength"]
ENDPOINTS = {
    "text_to_image": REQUEST_PARAMETERS + CONTROL_PARAMETERS + CREATIVE_PARAMETERS,
    "image_to_image": REQUEST_PARAMETERS + ["image", "strength"] + CONTROL_PARAMETERS + ["styles"],
    "ip_adapter": REQUEST_PARAMETERS + ["ip_adapter_image", "ip_adapter_scale", "image", "strength"]
    + CONTROL_PARAMETERS + CREATIVE_PARAMETERS,
    "inpaint": REQUEST_PARAMETERS + INPAINT_PARAMETERS + CONTROL_PARAMETERS + ["styles"],
}


class FakeProgress:
    """Stands in for gr.Progress: records every (step, total) and can act on a step."""

    def __init__(self, on_step=None):
        self.steps = []
        self.on_step = on_step

    def __call__(self, value, desc=None, unit=None, **_):
        self.steps.append(value)
        if self.on_step:
            self.on_step(*value)


# --- Finding the wired handlers of the built app ---


def component(app: gr.Blocks, elem_id: str):
    return next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == elem_id)


def handler(app: gr.Blocks, elem_id: str, event: str):
    """The function the app runs when `event` fires on the component `elem_id`."""
    target = component(app, elem_id)._id
    found = [f.fn for f in app.fns.values() if (target, event) in f.targets and f.fn is not None]
    assert len(found) == 1, f"{len(found)} handlers for {elem_id}.{event}"
    return found[0]


def by_id(updates: dict) -> dict:
    """Restore updates keyed by elem_id ('tabs' for the tab strip)."""
    return {("tabs" if isinstance(block, gr.Tabs) else block.elem_id): value for block, value in updates.items()}


def final(outputs: list) -> tuple:
    """The last (gallery, result) pair a run yielded."""
    return outputs[-1]


def gallery_files(app: gr.Blocks, elem_id: str, items: list) -> list[tuple[str, str]]:
    """What the browser gets for gallery items (gradio writes the PNG files), as the gallery sends them back."""
    data = component(app, elem_id).postprocess(items)
    return [(item.image.path, item.caption) for item in data.root]


def upload(app_dir: Path, image: Image.Image, name: str) -> str:
    """An image saved where gradio keeps uploads (the only folder the handlers read files from)."""
    folder = app_dir / "upload-test"
    folder.mkdir(exist_ok=True)
    path = folder / name
    image.save(path)
    return str(path)


def gradient(size=(256, 256)) -> Image.Image:
    ramp = np.linspace(0, 255, size[0], dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(ramp, (size[1], 1))] * 3, axis=-1))
