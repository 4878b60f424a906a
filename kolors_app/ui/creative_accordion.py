"""The LoRA, styles and hires-fix accordion of the generation tabs, and how its values reach their runs."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import gradio as gr

from kolors_app.core.creative_fields import DEFAULT_STRENGTH, DEFAULT_UPSCALE, LATENT, HiresFix
from kolors_app.core.errors import ValidationError
from kolors_app.core.prompt_syntax import split_lora_tags
from kolors_app.core.request import GenerationRequest
from kolors_app.creative.lora import restore_loras
from kolors_app.creative.part import final_prompts, tools_for
from kolors_app.ui.i18n import i18n
from kolors_app.ui.runner import CREATIVE_PART, AppContext, as_text

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
        styles: Style names to apply (styles.csv and the shipped ones, e.g. "Ink wash / 水墨"); none by default. \
LoRAs go into the prompt as <lora:name:weight>.
        hires_fix: true for A1111's hires fix: generate at width x height, upscale, then repaint at the larger size \
(default false).
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
