"""The creative part of a request at run time (LoRAs, styles, dynamic prompts, hires fix): its libraries and its run."""

from __future__ import annotations

import dataclasses
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from kolors_app.core.creative_fields import LoraChoice, hires_target_size
from kolors_app.core.errors import ValidationError
from kolors_app.core.prompt_syntax import split_lora_tags
from kolors_app.core.request import GenerationRequest
from kolors_app.core.schema import read_lora_choices
from kolors_app.creative import dynamic_prompts
from kolors_app.creative import hires
from kolors_app.creative import lora
from kolors_app.creative import styles
from kolors_app.creative.upscalers import UpscalerLibrary


# --- the libraries of one app (folders from the settings) ---

@dataclass
class CreativeTools:
    """The LoRA library and switcher, upscalers and styles of one loaded model."""

    loras: lora.LoraLibrary
    switcher: lora.LoraSwitcher
    upscalers: UpscalerLibrary
    styles_file: Any = None

    def styles(self) -> dict[str, styles.Style]:
        """The shipped styles plus the user's styles.csv (read each time: it may be edited while the app runs)."""
        return styles.read_styles(*([self.styles_file] if self.styles_file else []))


_TOOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TOOLS_LOCK = threading.Lock()


def tools_for(manager) -> CreativeTools:
    """The creative tools of this pipeline manager, made on first use from its settings."""
    with _TOOLS_LOCK:
        if manager not in _TOOLS:
            settings = manager.settings
            library = lora.LoraLibrary(settings.lora_dir, lora.HubAccess.of(settings))
            device = "cuda" if settings.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
            _TOOLS[manager] = CreativeTools(library, lora.LoraSwitcher(library),
                                            UpscalerLibrary(settings.upscaler_dir, device), settings.styles_file)
        return _TOOLS[manager]


# --- one run ---

@dataclass
class Prepared:
    """What a request's creative part turns into: each image's final prompts, the LoRAs, the hires size."""

    prompts: list[str]
    negative_prompts: list[str]
    loras: list[LoraChoice]
    hires_size: tuple[int, int] | None = None
    base_size: tuple[int, int] | None = None
    applied: list[lora.AppliedLora] = field(default_factory=list)


def final_prompts(request: GenerationRequest, seeds: list[int],
                  style_table: dict) -> tuple[list[str], list[str], list[LoraChoice]]:
    """Each image's prompts: LoRA tags removed, styles applied, {a|b} choices drawn from that image's seed."""
    prompt, negative, choices = _split_loras(request)
    prompt, negative = styles.apply_styles(prompt, negative, request.styles, style_table)
    prompts = [dynamic_prompts.resolve(prompt, seed, "prompt") for seed in seeds]
    negatives = [dynamic_prompts.resolve(negative, seed, "negative_prompt") for seed in seeds]
    return prompts, negatives, choices


def _split_loras(request: GenerationRequest) -> tuple[str, str, list[LoraChoice]]:
    """The prompts without their `<lora:...>` tags, and the request's LoRAs: its list, then the tags' others."""
    prompt, tags = split_lora_tags(request.prompt)
    negative, negative_tags = split_lora_tags(request.negative_prompt)
    _check_tags(tags, "prompt")
    _check_tags(negative_tags, "negative_prompt")
    listed = {choice.name for choice in request.loras}
    choices = list(request.loras) + [tag for tag in tags + negative_tags if tag.name not in listed]
    return prompt, negative, read_lora_choices(choices)


def _check_tags(tags: list[LoraChoice], field_name: str) -> None:
    """Each `<lora:name:weight>` tag by the schema's LoRA rules, the error naming the prompt that holds it."""
    for tag in tags:
        try:
            read_lora_choices([tag])
        except ValidationError as error:
            raise ValidationError(field_name, f"<lora:{tag.name}:{tag.weight:g}>: {error.message}", error.code,
                                  error.allowed) from None


def check_loras(manager, request: GenerationRequest) -> None:
    """Refuse, without reaching the network, a LoRA that is neither here nor a Hub repo this server may fetch."""
    library = tools_for(manager).loras
    for choice in _split_loras(request)[2]:
        library.check(choice.name)


def fetch_loras(manager, request: GenerationRequest) -> None:
    """Download the request's Hub LoRAs not here yet (each size checked first); called outside the GPU slot."""
    library = tools_for(manager).loras
    for choice in _split_loras(request)[2]:
        library.fetch(choice.name)


def prepare(manager, request, seeds: list[int]) -> Prepared:
    """Resolve prompts and check LoRA, style and upscaler names: every unknown one is named before model work."""
    tools = tools_for(manager)
    prompts, negatives, choices = final_prompts(request, seeds, tools.styles())
    for choice in choices:
        tools.loras.get(choice.name)
    size = None
    if request.hires is not None:
        tools.upscalers.check(request.hires.upscaler, "hires_upscaler")
        size = hires_target_size(request.width, request.height, request.hires.upscale, manager.settings.limits)
    return Prepared(prompts, negatives, choices, size, (request.width, request.height))


def apply_loras(manager, prepared: Prepared, pipe=None) -> None:
    """Switch the shared U-Net and ChatGLM to exactly the request's LoRAs (always on the base pipeline).

    `pipe`: the run's pipeline; where its U-Net is another one (Kolors-Inpainting's), that one gets them too.
    """
    prepared.applied = tools_for(manager).switcher.apply(manager.load(), prepared.loras,
                                                         unet=pipe.unet if pipe is not None else None)


def conditioning(caches, pipe, request, prepared: Prepared, base_conditioning) -> dict:
    """The embeddings of each image's own final prompt (dynamic prompts differ per image), stacked."""
    pairs = list(zip(prepared.prompts, prepared.negative_prompts))
    if len(set(pairs)) == 1:
        return base_conditioning(caches, pipe, dataclasses.replace(request, prompt=pairs[0][0],
                                                                   negative_prompt=pairs[0][1]))
    parts = [base_conditioning(caches, pipe, dataclasses.replace(request, prompt=p, negative_prompt=n, num_images=1))
             for p, n in pairs]
    stacked = dict(parts[0])
    for key in ("prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds", "negative_pooled_prompt_embeds"):
        if key in stacked:
            stacked[key] = torch.cat([part[key] for part in parts])
    return stacked


def run(manager, pipe, request, prepared: Prepared, arguments: dict, seeds: list[int], callback, second_pass):
    """The diffusers call, plus the hires fix's second pass (second_pass() gives its pipeline) when asked for."""
    if request.hires is None:
        return pipe(**arguments, callback_on_step_end=callback)
    first = pipe(**arguments, output_type=hires.first_pass_output_type(request.hires), callback_on_step_end=callback)
    with second_pass() as second:
        return hires.second_pass(second, first, request.hires, prepared.hires_size, arguments,
                                 request.num_inference_steps, seeds, tools_for(manager).upscalers, callback)


def image_values(prepared: Prepared, index: int) -> dict[str, Any]:
    """What one image records beyond the request: its final prompts and the LoRAs with their hashes."""
    values: dict[str, Any] = {"final_prompt": prepared.prompts[index],
                              "final_negative_prompt": prepared.negative_prompts[index]}
    if prepared.hires_size is not None:
        # As A1111: Size is the first pass's; the hires upscale says how large the image came out.
        values["width"], values["height"] = prepared.base_size
    if prepared.applied:
        values["loras"] = [{"name": a.name, "weight": a.weight, "hash": a.hash} for a in prepared.applied]
    return values


def restore_notes(manager, params: dict) -> tuple[dict, list[str]]:
    """Saved LoRAs matched to this app's (by name, else hash); notes say which are missing here."""
    if not params.get("loras"):
        return params, []
    found, notes = lora.restore_loras(tools_for(manager).loras, params["loras"])
    return {**params, "loras": found}, notes
