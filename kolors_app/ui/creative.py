"""The Creative tab: LoRA picker, styles with the final prompt, hires fix, X/Y/Z plot and Upscale."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import gradio as gr

from kolors_app.creative import xyz
from kolors_app.creative.part import final_prompts, tools_for
from kolors_app.core.creative_fields import DEFAULT_STRENGTH, DEFAULT_UPSCALE, LATENT, HiresFix, LoraChoice
from kolors_app.core.prompt_syntax import split_lora_tags
from kolors_app.creative.lora import restore_loras
from kolors_app.engine.generation import RunControl
from kolors_app.serving.quotas import resolve
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import GenerationRequest
from kolors_app.core.schema import request_from_dict
from kolors_app.core.validation import validate
from kolors_app.core.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES
from kolors_app.ui.i18n import i18n
from kolors_app.outputs.result_files import encode_png, write_served_png
from kolors_app.ui.runner import CREATIVE_PART, AppContext, as_text, run_request, session_of

STRINGS = {
    "en": {
        "creative": "Creative", "lora_picker": "LoRAs (type to search)", "lora_weight": "LoRA weight",
        "lora_refresh": "Refresh LoRAs", "styles": "Styles", "final_prompt": "Final prompt (what ChatGLM reads)",
        "hires": "Hires fix", "hires_on": "Use hires fix", "hires_upscale": "Upscale by",
        "hires_upscaler": "Upscaler", "hires_steps": "Hires steps (0 = as the first pass)",
        "hires_strength": "Denoising strength", "xyz": "X/Y/Z plot", "x_type": "X type", "x_values": "X values",
        "y_type": "Y type", "y_values": "Y values", "z_type": "Z type", "z_values": "Z values",
        "run_plot": "Run the plot", "upscale": "Upscale an image", "upscale_factor": "Factor",
        "upscale_run": "Upscale", "upscaled": "Upscaled",
    },
    "zh": {
        "creative": "创意工具", "lora_picker": "LoRA（输入以搜索）", "lora_weight": "LoRA 权重",
        "lora_refresh": "刷新 LoRA", "styles": "风格", "final_prompt": "最终提示词（ChatGLM 读取的内容）",
        "hires": "高清修复", "hires_on": "启用高清修复", "hires_upscale": "放大倍数", "hires_upscaler": "放大器",
        "hires_steps": "高清步数（0 = 与第一遍相同）", "hires_strength": "重绘幅度", "xyz": "X/Y/Z 图表",
        "x_type": "X 类型", "x_values": "X 取值", "y_type": "Y 类型", "y_values": "Y 取值", "z_type": "Z 类型",
        "z_values": "Z 取值", "run_plot": "生成图表", "upscale": "放大图片", "upscale_factor": "倍数",
        "upscale_run": "放大", "upscaled": "放大结果",
    },
}
for _language, _strings in STRINGS.items():
    i18n.translations.setdefault(_language, {}).update(_strings)

AXIS_CHOICES = ["none", *xyz.AXES]


def _request(prompt, negative, loras, weight, style_names, seed, steps, guidance, scheduler, width, height,
             hires_on, upscale, upscaler, hires_steps, strength) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt, negative_prompt=negative, width=int(width), height=int(height),
        num_inference_steps=int(steps), guidance_scale=float(guidance), scheduler=scheduler, seed=int(seed),
        loras=[LoraChoice(name, float(weight)) for name in loras or []], styles=list(style_names or []),
        hires=HiresFix(float(upscale), upscaler, int(hires_steps), float(strength)) if hires_on else None)


def creative_tab(ctx: AppContext) -> dict:
    """Build the tab's components and events; returns the components tests and hooks use."""
    tools = tools_for(ctx.manager)
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label=i18n("prompt"), lines=3, elem_id="creative-prompt")
            negative = gr.Textbox(label=i18n("negative_prompt"), lines=1, elem_id="creative-negative")
            with gr.Row():
                loras = gr.Dropdown(tools.loras.names(), multiselect=True, filterable=True,
                                    label=i18n("lora_picker"), elem_id="creative-loras")
                weight = gr.Slider(-2, 2, value=0.8, step=0.05, label=i18n("lora_weight"))
                refresh = gr.Button(i18n("lora_refresh"), size="sm")
            style_names = gr.Dropdown(sorted(tools.styles()), multiselect=True, label=i18n("styles"),
                                      elem_id="creative-styles")
            final = gr.Textbox(label=i18n("final_prompt"), interactive=False, elem_id="creative-final")
            with gr.Row():
                seed = gr.Number(value=1, precision=0, label=i18n("seed"), elem_id="creative-seed")
                steps = gr.Slider(1, ctx.settings.limits.max_steps, value=25, step=1, label=i18n("steps"),
                                  elem_id="creative-steps")
                guidance = gr.Slider(0, ctx.settings.limits.max_guidance, value=5.0, step=0.5,
                                     label=i18n("guidance"))
                scheduler = gr.Dropdown(list(SCHEDULER_NAMES), value=DEFAULT_SCHEDULER, label=i18n("scheduler"))
            with gr.Row():
                width = gr.Slider(ctx.settings.limits.min_size, ctx.settings.limits.max_size, value=1024, step=8,
                                  label=i18n("width"), elem_id="creative-width")
                height = gr.Slider(ctx.settings.limits.min_size, ctx.settings.limits.max_size, value=1024, step=8,
                                   label=i18n("height"), elem_id="creative-height")
            with gr.Accordion(i18n("hires"), open=False):
                hires_on = gr.Checkbox(False, label=i18n("hires_on"), elem_id="creative-hires")
                upscale = gr.Slider(1.0, 4.0, value=1.5, step=0.05, label=i18n("hires_upscale"))
                upscaler = gr.Dropdown(tools.upscalers.names(), value=LATENT, label=i18n("hires_upscaler"))
                hires_steps = gr.Slider(0, ctx.settings.limits.max_steps, value=0, step=1, label=i18n("hires_steps"))
                strength = gr.Slider(0.05, 1.0, value=0.45, step=0.05, label=i18n("hires_strength"))
            with gr.Row():
                generate = gr.Button(i18n("generate"), variant="primary", elem_id="creative-generate")
                stop = gr.Button(i18n("stop"), elem_id="creative-stop")
        with gr.Column():
            gallery = gr.Gallery(label=i18n("gallery"), format="png", elem_id="creative-gallery")
            result = gr.JSON(label=i18n("parameters"), elem_id="creative-result")
    with gr.Accordion(i18n("xyz"), open=False, elem_id="creative-xyz"):
        axis_rows = []
        for letter in "xyz":
            with gr.Row():
                axis_rows += [gr.Dropdown(AXIS_CHOICES, value="none", label=i18n(f"{letter}_type"),
                                          elem_id=f"creative-{letter}-type"),
                              gr.Textbox(label=i18n(f"{letter}_values"), elem_id=f"creative-{letter}-values")]
        run_plot = gr.Button(i18n("run_plot"), elem_id="creative-run-plot")
    with gr.Accordion(i18n("upscale"), open=False, elem_id="creative-upscale"):
        with gr.Row():
            source = gr.Image(type="pil", label=i18n("init_image"), elem_id="creative-upscale-source")
            upscaled = gr.Image(type="pil", label=i18n("upscaled"), format="png", elem_id="creative-upscaled")
        with gr.Row():
            upscale_with = gr.Dropdown(tools.upscalers.names(latent=False), value="Lanczos",
                                       label=i18n("hires_upscaler"), elem_id="creative-upscale-with")
            factor = gr.Slider(1.0, 4.0, value=2.0, step=0.25, label=i18n("upscale_factor"),
                               elem_id="creative-upscale-factor")
            upscale_run = gr.Button(i18n("upscale_run"), elem_id="creative-upscale-run")

    inputs = [prompt, negative, loras, weight, style_names, seed, steps, guidance, scheduler, width, height,
              hires_on, upscale, upscaler, hires_steps, strength]

    def show_final(prompt_text, negative_text, names, seed_value):
        try:
            request = GenerationRequest(prompt=prompt_text or "", negative_prompt=negative_text or "",
                                        styles=list(names or []))
            prompts, negatives, _ = final_prompts(request, [int(seed_value or 0)], tools.styles())
        except ValidationError as error:
            return as_text(str(error))
        return prompts[0] + (f"\n[negative] {negatives[0]}" if negatives[0] else "")

    for box in (prompt, negative, style_names, seed):
        box.change(show_final, [prompt, negative, style_names, seed], final, queue=False, api_visibility="private")
    refresh.click(lambda: gr.Dropdown(choices=tools.loras.refresh()), None, loras, queue=False,
                  api_visibility="private")

    def run(prompt, negative, loras, weight, style_names, seed, steps, guidance, scheduler, width, height,
            hires_on, upscale, upscaler, hires_steps, strength, request: gr.Request, progress=gr.Progress()):
        values = (prompt, negative, loras, weight, style_names, seed, steps, guidance, scheduler, width, height,
                  hires_on, upscale, upscaler, hires_steps, strength)
        yield from run_request(ctx, _request(*values), request, progress)

    generate.click(run, inputs, [gallery, result], concurrency_id="gpu", api_visibility="private")
    def stop_run(request: gr.Request):
        ctx.runs.stop(session_of(request))

    stop.click(stop_run, None, None, queue=False, api_visibility="private")

    def plot(prompt, negative, loras, weight, style_names, seed, steps, guidance, scheduler, width, height,
             hires_on, upscale, upscaler, hires_steps, strength, x_type, x_values, y_type, y_values, z_type, z_values,
             request: gr.Request, progress=gr.Progress()):
        base_values = (prompt, negative, loras, weight, style_names, seed, steps, guidance, scheduler, width, height,
                       hires_on, upscale, upscaler, hires_steps, strength)
        axis_values = (x_type, x_values, y_type, y_values, z_type, z_values)
        try:
            base = validate(_request(*base_values), ctx.settings.limits)
            axes = [xyz.Axis(kind, xyz.parse_values(kind, text, letter)) if kind != "none" else None
                    for letter, kind, text in zip("xyz", axis_values[::2], axis_values[1::2])]
            cells = xyz.plan_cells(base.to_dict(), axes, resolve(ctx.settings).max_work)
        except ValidationError as error:
            raise gr.Error(as_text(str(error)), title="Invalid input") from None
        flag = ctx.runs.start(session_of(request))

        def run_cell(params):
            result = ctx.generate(request_from_dict(params, ctx.settings.limits), RunControl(stop=flag))
            return None if result.stopped else (result.images[0].image, result.images[0].parameters)

        try:
            grid = xyz.run_grid(cells, run_cell, axes, lambda done, total: progress((done, total), desc="Cell"),
                                stop=flag)
        except ValidationError as error:
            raise gr.Error(as_text(str(error)), title="Invalid input") from None
        finally:
            ctx.runs.finish(session_of(request), flag)
        if grid.grid is None:
            return [], {"cells": [], "stopped": True}
        info = {**grid.cells[0].result_params, **xyz.describe(axes)}
        folder = gr.utils.get_upload_folder()
        pictures = [(grid.grid, info, "grid")] + [(cell.image, cell.result_params, f"{cell.x},{cell.y},{cell.z}")
                                                   for cell in grid.cells]
        items = [(write_served_png(encode_png(image, params), folder, f"xyz-{params['seed']}-{caption}.png"), caption)
                 for image, params, caption in pictures]
        return items, {"cells": [cell.result_params for cell in grid.cells], "stopped": grid.stopped,
                       **xyz.describe(axes)}

    run_plot.click(plot, inputs + axis_rows, [gallery, result], concurrency_id="gpu", api_visibility="private")

    def upscale_image(image, name, amount):
        if image is None:
            raise gr.Error("image: an image is required", title="Invalid input")
        try:
            return tools.upscalers.upscale(image, name, float(amount))
        except ValidationError as error:
            raise gr.Error(as_text(str(error)), title="Invalid input") from None

    upscale_run.click(upscale_image, [source, upscale_with, factor], upscaled, concurrency_id="gpu",
                      api_visibility="private")
    return {"prompt": prompt, "loras": loras, "styles": style_names, "final": final, "gallery": gallery,
            "result": result, "generate": generate, "run_plot": run_plot}


# --- The LoRA, styles and hires-fix accordion of the generation tabs ---

CREATIVE_STRINGS = {
    "en": {"creative_tools": "LoRA, styles, hires fix", "lora_add": "Add a LoRA (type to search)",
           "lora_add_weight": "Weight of the next LoRA",
           "lora_hint": "A LoRA goes into the prompt as `<lora:name:weight>`; edit the weight there, several at once."},
    "zh": {"creative_tools": "LoRA、风格、高清修复", "lora_add": "添加 LoRA（输入以搜索）",
           "lora_add_weight": "下一个 LoRA 的权重",
           "lora_hint": "LoRA 以 `<lora:名称:权重>` 写入提示词；可在提示词中修改权重，可同时使用多个。"},
}
for _language, _strings in CREATIVE_STRINGS.items():
    i18n.translations.setdefault(_language, {}).update(_strings)

HIRES_FACTOR = (1.25, 2.0)
CREATIVE_ARGS = """
        styles: Style names to apply (styles.csv and the shipped ones, e.g. "Ink wash / 水墨"); none by default. LoRAs go into the prompt as <lora:name:weight>.
        hires_fix: true for A1111's hires fix: generate at width x height, upscale, then repaint at the larger size (default false).
        hires_upscaler: With hires_fix: "Latent" (default), "Lanczos" or a model of the upscalers folder.
        hires_upscale: With hires_fix: the upscale factor, 1.25 to 2 (default 1.5).
        hires_steps: With hires_fix: steps of the second pass; 0 (default) = as the first pass.
        hires_denoising_strength: With hires_fix: how much the second pass repaints, 0.05 to 1 (default 0.45)."""
# Page value -> request field, in the order the accordion's inputs reach the handlers.
PART_FIELDS = ("styles", "hires_fix", "hires_upscaler", "hires_upscale", "hires_steps", "hires_denoising_strength")


@dataclass
class CreativeControls:
    """The accordion's components; `inputs` go after a tab's own inputs, `restorable` maps saved keys to them."""

    lora: gr.Dropdown
    lora_weight: gr.Slider
    styles: gr.Dropdown
    final: gr.Textbox
    hires: list = field(default_factory=list)  # on, upscaler, upscale, steps, strength; empty where no hires fix
    library: object = None  # the LoRA library, to restore saved LoRAs by name or hash

    @property
    def inputs(self) -> list:
        return [self.styles, *self.hires]

    @property
    def restorable(self) -> dict:
        return dict(zip(PART_FIELDS, self.inputs))


def add_lora_tag(prompt: str, name: str | None, weight: float) -> str:
    """The prompt with <lora:name:weight> added (or its weight changed when the tag is there)."""
    if not name:
        return prompt
    text, choices = split_lora_tags(prompt or "")
    tags = [f"<lora:{c.name}:{c.weight:g}>" for c in choices if c.name != name] + [f"<lora:{name}:{weight:g}>"]
    return " ".join(tags + ([text] if text else []))


def part_of(values: list) -> dict:
    """The accordion's values as the request's creative fields."""
    named = dict(zip(PART_FIELDS, values))
    styles = named["styles"]
    # Anything but a list reaches validation as it came, to be refused naming the field.
    part = {"styles": [] if styles is None else list(styles) if isinstance(styles, (list, tuple)) else styles}
    if named.get("hires_fix"):
        part["hires"] = HiresFix(named["hires_upscale"], named["hires_upscaler"], named["hires_steps"],
                                 named["hires_denoising_strength"])
    return part


def creative_accordion(ctx: AppContext, mode: str, controls, with_hires: bool = True) -> CreativeControls:
    """Build the accordion inside a tab's column and wire its LoRA picker and final prompt."""
    tools = tools_for(ctx.manager)
    with gr.Accordion(i18n("creative_tools"), open=False, elem_id=f"{mode}-creative"):
        with gr.Row():
            lora_pick = gr.Dropdown(tools.loras.names(), value=None, filterable=True, label=i18n("lora_add"),
                                    elem_id=f"{mode}-lora-pick")
            weight = gr.Slider(-2, 2, value=0.8, step=0.05, label=i18n("lora_add_weight"),
                               elem_id=f"{mode}-lora-weight")
        gr.Markdown(i18n("lora_hint"))
        style_names = gr.Dropdown(sorted(tools.styles()), value=[], multiselect=True, label=i18n("styles"),
                                  elem_id=f"{mode}-styles")
        final = gr.Textbox(label=i18n("final_prompt"), interactive=False, lines=2, elem_id=f"{mode}-final-prompt")
        hires_inputs = []
        if with_hires:
            with gr.Group():
                low, high = HIRES_FACTOR
                hires_inputs = [
                    gr.Checkbox(False, label=i18n("hires_on"), elem_id=f"{mode}-hires"),
                    gr.Dropdown(tools.upscalers.names(), value=LATENT, label=i18n("hires_upscaler"),
                                elem_id=f"{mode}-hires-upscaler"),
                    gr.Slider(low, high, value=DEFAULT_UPSCALE, step=0.05, label=i18n("hires_upscale"),
                              elem_id=f"{mode}-hires-upscale"),
                    gr.Slider(0, ctx.settings.limits.max_steps, value=0, step=1, label=i18n("hires_steps"),
                              elem_id=f"{mode}-hires-steps"),
                    gr.Slider(0.05, 1.0, value=DEFAULT_STRENGTH, step=0.05, label=i18n("hires_strength"),
                              elem_id=f"{mode}-hires-strength")]
    box = CreativeControls(lora_pick, weight, style_names, final, hires_inputs, tools.loras)

    def picked(prompt, name, amount):
        return add_lora_tag(prompt, name, float(amount)), None

    lora_pick.input(picked, [controls.prompt, lora_pick, weight], [controls.prompt, lora_pick], queue=False,
                    api_visibility="private")

    def show_final(prompt_text, negative_text, names, seed_value):
        try:
            seed = int(seed_value) if isinstance(seed_value, (int, float)) and seed_value >= 0 else 0
            request = GenerationRequest(prompt=prompt_text or "", negative_prompt=negative_text or "",
                                        styles=list(names or []))
            prompts, negatives, _ = final_prompts(request, [seed], tools.styles())
        except ValidationError as error:
            return as_text(str(error))
        return prompts[0] + (f"\n[negative] {negatives[0]}" if negatives[0] else "")

    sources = [controls.prompt, controls.negative_prompt, style_names, controls.seed]
    # The prompt's change event is the token counter's (one handler per event keeps them testable): typing it is.
    triggers = [controls.prompt.input] + [source.change for source in sources[1:]]
    gr.on(triggers, show_final, sources, final, queue=False, show_progress="hidden", api_visibility="private")
    return box


def with_creative_part(handler, box: CreativeControls | None):
    """`handler` taking the accordion's values as its last inputs; its run gets them as the request's part."""
    if box is None:
        return handler
    count = len(box.inputs)
    signature = inspect.signature(handler)
    own = list(signature.parameters.values())
    position = next(i for i, p in enumerate(own) if p.name == "request")
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
             for name in PART_FIELDS[:count]]
    # gradio inserts gr.Request at the position of `request` in the signature: after every input.
    tail = [p.replace(default=None) if p.default is inspect.Parameter.empty else p for p in own[position:]]
    new_signature = inspect.Signature(own[:position] + added + tail)

    def split(args, kwargs):
        bound = new_signature.bind(*args, **kwargs)
        values = dict(bound.arguments)
        part = part_of([values.pop(name, None) for name in PART_FIELDS[:count]])
        return values, part

    if inspect.iscoroutinefunction(handler):
        @functools.wraps(handler)
        async def wrapper(*args, **kwargs):
            values, part = split(args, kwargs)
            token = CREATIVE_PART.set(part)
            try:
                return await handler(**values)
            finally:
                CREATIVE_PART.reset(token)
    else:
        @functools.wraps(handler)
        def wrapper(*args, **kwargs):
            values, part = split(args, kwargs)
            inner = handler(**values)
            while True:
                # Set around each step: gradio may run each next() of a generator in another thread's context.
                token = CREATIVE_PART.set(part)
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    CREATIVE_PART.reset(token)
                yield item
    wrapper.__signature__ = new_signature
    if wrapper.__doc__ and "Returns:" in wrapper.__doc__:
        # The program endpoints' docstrings are what API and MCP clients read about each parameter.
        args = CREATIVE_ARGS if box.hires else CREATIVE_ARGS.split("\n        hires_fix")[0]
        wrapper.__doc__ = wrapper.__doc__.replace("\n\n    Returns:", f"{args}\n\n    Returns:", 1)
    return wrapper


def restore_part(box: CreativeControls | None, prompt_box, parameters: dict) -> tuple[dict, list[str]]:
    """(component -> value, notes): styles and hires settings, and saved LoRAs as prompt tags where absent."""
    if box is None:
        return {}, []
    updates = {box.styles: [name for name in parameters.get("styles") or []]}
    if box.hires:
        updates[box.hires[0]] = "hires_upscale" in parameters
        for name, component in zip(PART_FIELDS[2:], box.hires[1:]):
            if name in parameters:
                updates[component] = parameters[name]
    prompt = parameters.get("prompt") or ""
    found, notes = restore_loras(box.library, parameters.get("loras") or [])
    _, tagged = split_lora_tags(prompt)
    tagged_names = {choice.name for choice in tagged}
    extra = [item for item in found if item["name"] not in tagged_names]
    if extra:
        for item in extra:
            prompt = add_lora_tag(prompt, item["name"], item["weight"])
        updates[prompt_box] = prompt
    return updates, notes
