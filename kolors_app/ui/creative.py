"""The Creative tab: LoRA picker, styles with the final prompt, hires fix, X/Y/Z plot and Upscale."""

from __future__ import annotations

import gradio as gr

from kolors_app.core.creative_fields import LATENT, HiresFix, LoraChoice
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import GenerationRequest
from kolors_app.core.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES
from kolors_app.core.schema import request_from_dict
from kolors_app.core.validation import validate
from kolors_app.creative import xyz
from kolors_app.creative.part import final_prompts, tools_for
from kolors_app.media.images import load_image
from kolors_app.engine.jobs import PAGE, PLOT, UPSCALE, Job, PlotSpec, UpscaleSpec
from kolors_app.outputs.result_files import encode_png, write_served_png
from kolors_app.ui.i18n import i18n
from kolors_app.ui.runner import AppContext, as_text, owner_of, raise_public, run_request, submit

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
            # A path, opened by load_image: gradio's preprocessing would decode it before any check.
            source = gr.Image(type="filepath", image_mode=None, label=i18n("init_image"),
                              elem_id="creative-upscale-source")
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
        ctx.engine.stop(owner_of(ctx, request))

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
            cells = xyz.plan_cells(base.to_dict(), axes)
            requests = [request_from_dict(cell.params, ctx.settings.limits) for cell in cells]
        except ValidationError as error:
            raise gr.Error(as_text(str(error)), title="Invalid input") from None
        handle = submit(ctx, Job(PLOT, owner_of(ctx, request), PAGE, requests, plot=PlotSpec(cells, axes)), request)
        try:
            # A generator: gradio closes it when the visitor leaves, and the finally stops the plot.
            for event in handle.events():
                if event.kind == "progress":
                    progress((event.index + event.step / max(event.total, 1), event.count), desc="Cell")
                    yield gr.skip(), gr.skip()
                elif event.kind == "failed":
                    raise_public(ctx, event.error, request)
                elif event.kind in ("done", "stopped"):
                    yield plot_files(event.outcome, axes)
        finally:
            if not handle.ended:
                handle.stop()

    run_plot.click(plot, inputs + axis_rows, [gallery, result], concurrency_id="gpu", api_visibility="private")

    def upscale_image(value, name, amount, request: gr.Request):
        path = value.get("path") if isinstance(value, dict) else value
        if not path:
            raise gr.Error("image: an image is required", title="Invalid input")
        try:
            image = load_image(path, ctx.settings.limits, allowed_roots=[gr.utils.get_upload_folder()])
        except ValidationError as error:
            raise gr.Error(as_text(str(error)), title="Invalid input") from None
        upscale = UpscaleSpec(image, name, amount if isinstance(amount, (int, float)) else float(amount or 0))
        handle = submit(ctx, Job(UPSCALE, owner_of(ctx, request), PAGE, upscale=upscale), request, follow=False)
        try:
            return handle.result().image
        except ValidationError as error:
            raise gr.Error(as_text(str(error)), title="Invalid input") from None
        except Exception as error:  # shown short, logged in full by the executor
            raise_public(ctx, error, request)
        finally:
            if not handle.ended:
                handle.stop()

    upscale_run.click(upscale_image, [source, upscale_with, factor], upscaled, concurrency_id="gpu",
                      preprocess=False, api_visibility="private")
    return {"prompt": prompt, "loras": loras, "styles": style_names, "final": final, "gallery": gallery,
            "result": result, "generate": generate, "run_plot": run_plot}


def plot_files(outcome, axes) -> tuple:
    """Gallery items (the labelled grid, then every cell) and the JSON result of a finished or stopped plot."""
    if outcome.grid is None:
        return [], {"cells": [], "stopped": True}
    info = {**outcome.cells[0].result_params, **xyz.describe(axes)}
    folder = gr.utils.get_upload_folder()
    pictures = [(outcome.grid, info, "grid")] + [(cell.image, cell.result_params, f"{cell.x},{cell.y},{cell.z}")
                                                  for cell in outcome.cells]
    items = [(write_served_png(encode_png(image, params), folder, f"xyz-{params['seed']}-{caption}.png"), caption)
             for image, params, caption in pictures]
    return items, {"cells": [cell.result_params for cell in outcome.cells], "stopped": outcome.stopped,
                   **xyz.describe(axes)}
