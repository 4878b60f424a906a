"""The controls every generation tab shares: prompt, size, sampler, seed, buttons and the gallery."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import gradio as gr

from kolors_app.core.config import Limits, on_spaces
from kolors_app.core.schema import clean_parameters
from kolors_app.metadata.infotext import format_parameters
from kolors_app.core.errors import ValidationError
from kolors_app.core.schedulers import RECOMMENDED, SCHEDULER_NAMES
from kolors_app.core.zerogpu import on_zero_gpu
from kolors_app.ui.i18n import i18n, name_of, tr, language

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
SIZE_MULTIPLE = 8


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
    progress: gr.Markdown = None
    infotext: gr.Textbox = None
    reset: gr.Button = None
    api_trigger: gr.Button = None
    scheduler_state: gr.State = None

    def request_inputs(self) -> list:
        """The inputs every generate endpoint takes, in the API's order."""
        return [self.prompt, self.negative_prompt, self.width, self.height, self.num_inference_steps,
                self.guidance_scale, self.scheduler, self.seed, self.num_images]


REQUEST_FIELDS = ["prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale",
                  "scheduler", "seed", "num_images"]


SKIP = gr.skip()


def aspect_for(width: int, height: int) -> str:
    """The preset name for a size, or Custom."""
    for name, size in ASPECT_PRESETS.items():
        if size == (width, height):
            return name
    return CUSTOM


def gallery_buttons() -> list[str]:
    """The gallery's buttons that work where the app runs: gradio's Share works on Spaces only."""
    return ["download", "download_all", "fullscreen"] + (["share"] if on_spaces() or on_zero_gpu() else [])


def build_controls(mode: str, limits: Limits, steps: int, guidance: float, prompt_lines: int = 3,
                   scheduler: str = "Euler") -> tuple:
    """Lay out the shared controls; returns (controls, column for mode-specific inputs).

    The prompt and the Generate button come first (on a phone too), then the results, then the settings.
    """
    with gr.Row(equal_height=False, elem_classes="studio-prompt-row"):
        with gr.Column(scale=8):
            prompt = gr.Textbox(label=i18n("prompt"), placeholder=i18n("prompt_placeholder"), lines=prompt_lines,
                                max_length=limits.max_prompt_chars, elem_id=f"{mode}-prompt",
                                elem_classes="studio-prompt")
            token_count = gr.Markdown(f"0 / {limits.max_prompt_tokens}", elem_id=f"{mode}-tokens")
            negative_prompt = gr.Textbox(label=i18n("negative_prompt"), lines=1,
                                         max_length=limits.max_prompt_chars, elem_id=f"{mode}-negative",
                                         elem_classes="studio-prompt")
        with gr.Column(scale=2, min_width=160, elem_classes="studio-buttons"):
            generate = gr.Button(i18n("generate"), variant="primary", size="lg", elem_id=f"{mode}-generate")
            stop = gr.Button(i18n("stop"), variant="stop", interactive=False, elem_id=f"{mode}-stop")
    with gr.Row(equal_height=False, elem_classes="studio-main"):
        with gr.Column(scale=5, elem_classes="studio-settings"):
            extra = gr.Column()
            aspect = gr.Radio([(name, name) for name in ASPECT_PRESETS] + [(i18n("custom"), CUSTOM)], value="1:1",
                              label=i18n("aspect"), elem_id=f"{mode}-aspect")
            with gr.Row():
                width = gr.Slider(limits.min_size, limits.max_size, value=1024, step=8, label=i18n("width"),
                                  elem_id=f"{mode}-width")
                height = gr.Slider(limits.min_size, limits.max_size, value=1024, step=8, label=i18n("height"),
                                   elem_id=f"{mode}-height")
            with gr.Row():
                scheduler_box = gr.Dropdown(list(SCHEDULER_NAMES), value=scheduler, label=i18n("scheduler"),
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
                    reuse_seed = gr.Button(i18n("seed_of_selected"), size="sm", elem_id=f"{mode}-reuse-seed")
                num_images = gr.Slider(1, limits.max_images, value=1, step=1, label=i18n("num_images"), scale=2,
                                       elem_id=f"{mode}-num-images")
            with gr.Row():
                gr.Markdown(i18n("settings_note"), elem_classes="studio-note")
                reset = gr.Button(i18n("reset_settings"), size="sm", scale=0, min_width=160,
                                  elem_id=f"{mode}-reset")
        with gr.Column(scale=6, elem_classes="studio-results"):
            progress = gr.Markdown(i18n("progress_idle"), elem_id=f"{mode}-progress", elem_classes="studio-progress")
            gallery = gr.Gallery(label=i18n("gallery"), format="png", columns=2, height=560, interactive=False,
                                 object_fit="contain", buttons=gallery_buttons(), elem_id=f"{mode}-gallery")
            with gr.Row():
                use_settings = gr.Button(i18n("use_settings"), size="sm", elem_id=f"{mode}-use-settings")
                send_i2i = gr.Button(i18n("send_i2i"), size="sm", elem_id=f"{mode}-send-i2i")
                send_ip = gr.Button(i18n("send_ip"), size="sm", elem_id=f"{mode}-send-ip")
            infotext = gr.Textbox(label=i18n("infotext"), lines=3, interactive=False, buttons=["copy"],
                                  elem_id=f"{mode}-infotext")
            with gr.Accordion(i18n("json"), open=False):
                selected = gr.JSON(label=i18n("parameters"), elem_id=f"{mode}-selected")
            result = gr.JSON(visible=False)
            selected_index = gr.State(0)
            scheduler_state = gr.State(scheduler)
    controls = GenerationControls(prompt, negative_prompt, token_count, aspect, width, height, num_inference_steps,
                                  guidance_scale, scheduler_box, seed, random_seed, reuse_seed, num_images, generate,
                                  stop, gallery, result, selected, selected_index, use_settings, send_i2i, send_ip,
                                  progress, infotext, reset, None, scheduler_state)
    _wire_local_events(controls, limits)
    return controls, extra


def quiet(**kwargs) -> dict:
    """Options of a quick event that shows toasts: queued (gradio drops an unqueued event's toasts and turns its
    errors into a red "Error" on every output), with no progress overlay, and not part of the API."""
    return dict(queue=True, show_progress="hidden", api_visibility="private", **kwargs)


def _wire_local_events(c: GenerationControls, limits: Limits) -> None:
    """Events that touch only this tab's controls and need no model."""
    # .input, not .change: only a preset the user picks sets the sizes; the app's own aspect updates (typed
    # sizes, uploads, restores) come with the sizes they name.
    c.aspect.input(lambda name: [gr.skip()] * 2 if name == CUSTOM else list(ASPECT_PRESETS[name]),
                    c.aspect, [c.width, c.height], queue=False, api_visibility="private")
    c.scheduler.input(sampler_defaults, [c.scheduler, c.scheduler_state, c.num_inference_steps, c.guidance_scale],
                      [c.num_inference_steps, c.guidance_scale, c.scheduler_state], queue=False,
                      api_visibility="private")
    c.random_seed.click(lambda: -1, None, c.seed, queue=False, api_visibility="private")
    c.reuse_seed.click(seed_of_selected, [c.result, c.selected_index], c.seed, **quiet())
    c.gallery.select(selected_parameters, c.result, [c.selected, c.selected_index, c.infotext], queue=False,
                     api_visibility="private")

    for edited, size in (("width", c.width), ("height", c.height)):
        def snap(width, height, request: gr.Request = None, edited=edited):
            return snap_sizes(limits, width, height, edited, request)

        # preprocess=False: a typed 5000 reaches snap (gradio would refuse it past the maximum with a red Error).
        size.input(snap, [c.width, c.height], [size, c.aspect], trigger_mode="always_last", preprocess=False,
                   **quiet())


def sampler_defaults(name: str, previous: str, steps, guidance):
    """A sampler's recommended steps and guidance, unless the user had changed them from the previous one's."""
    if name not in RECOMMENDED:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        current = (int(steps), float(guidance))
    except (TypeError, ValueError):
        current = None
    if previous in RECOMMENDED and current != RECOMMENDED[previous]:
        return gr.skip(), gr.skip(), name  # the user's own values stay
    return (*RECOMMENDED[name], name)


def snapped_size(value, limits: Limits) -> int | None:
    """The nearest allowed size (a multiple of 8 inside the limits), or None when it is not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):  # NaN, or "1e400" from a hand-made event
        return None
    nearest = int(round(number / SIZE_MULTIPLE)) * SIZE_MULTIPLE
    return min(max(nearest, limits.min_size), limits.max_size)


def snap_sizes(limits: Limits, width, height, edited: str, request: gr.Request | None = None) -> tuple:
    """The typed size (`edited`: "width" or "height") snapped the way the slider does, saying so, and the aspect.

    Only the edited box is answered, and only when it must change: the other box may have been typed into
    while this answer was on its way, and an answer must not put its old value back.
    """
    lang = language(request)
    typed = width if edited == "width" else height
    snapped = snapped_size(typed, limits)
    if snapped is not None and snapped != typed:
        gr.Info(tr(lang, "snapped", field=name_of(lang, edited), value=typed, snapped=snapped,
                   low=limits.min_size, high=limits.max_size), title=tr(lang, "title_info"))
    sizes = {"width": width, "height": height}
    sizes[edited] = typed if snapped is None else snapped
    other = "height" if edited == "width" else "width"
    sizes[other] = snapped_size(sizes[other], limits) or sizes[other]
    try:
        aspect = aspect_for(int(sizes["width"]), int(sizes["height"]))
    except (TypeError, ValueError):
        aspect = gr.skip()
    return (gr.skip() if snapped is None or snapped == typed else snapped), aspect


def image_at(result: dict | None, index) -> dict | None:
    """The parameters of the image on screen: the selected one, else the first of the last run."""
    images = (result or {}).get("images") or []
    if not images:
        return None
    return images[index] if isinstance(index, int) and 0 <= index < len(images) else images[0]


def seed_of_selected(result: dict | None, index, request: gr.Request = None):
    """The selected image's seed (the first image's when none was clicked), or say there is none."""
    parameters = image_at(result, index)
    if parameters is None:
        gr.Warning(tr(request, "no_image_yet"), title=tr(request, "title_nothing_selected"))
        return gr.skip()
    gr.Info(tr(request, "seed_set", seed=parameters["seed"]), title=tr(request, "title_info"))
    return parameters["seed"]


def last_seed(result: dict | None):
    """The seed of the first image of the last run, or no change."""
    images = (result or {}).get("images") or []
    return images[0]["seed"] if images else gr.skip()


def infotext_of(parameters: dict | None) -> str:
    """The A1111 'parameters' text of one image, as under an image in A1111."""
    if not parameters:
        return ""
    try:  # the browser sends numbers back as JSON: 5.0 comes back as 5
        parameters = clean_parameters(parameters)
    except ValidationError:
        return ""
    return format_parameters(parameters)


def selected_parameters(result: dict | None, event: gr.SelectData):
    """The parameters, index and infotext of the gallery image the user clicked."""
    images = (result or {}).get("images") or []
    index = event.index if isinstance(event.index, int) and 0 <= event.index < len(images) else 0
    parameters = images[index] if images else None
    return parameters, index, infotext_of(parameters)


def selected_image(gallery: list | None, index: int) -> str | None:
    """The file of the selected gallery image (the first one if none was clicked)."""
    if not gallery:
        return None
    item = gallery[index] if isinstance(index, int) and 0 <= index < len(gallery) else gallery[0]
    if isinstance(item, dict):  # the gallery's own payload
        image = item.get("image") or {}
        path = image.get("path") if isinstance(image, dict) else None
    else:
        path = item[0] if isinstance(item, (tuple, list)) and item else item
    return path if isinstance(path, str) else None


def control_updates(controls: GenerationControls, parameters: dict) -> dict:
    """Component -> new value for every shared field found in saved parameters."""
    updates = {}
    for name in REQUEST_FIELDS:
        if name in parameters and parameters[name] is not None:
            updates[getattr(controls, name)] = parameters[name]
    if "width" in parameters and "height" in parameters:
        updates[controls.aspect] = aspect_for(parameters["width"], parameters["height"])
    if "scheduler" in parameters:
        updates[controls.scheduler_state] = parameters["scheduler"]
    return updates


def all_components(controls: GenerationControls) -> list:
    """Every component of the controls, for events that may update any of them."""
    return [getattr(controls, f.name) for f in fields(controls)]
