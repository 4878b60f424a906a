"""The creative part of a request (LoRAs, styles, dynamic prompts, hires fix): values, checks, and its run."""

from __future__ import annotations

import dataclasses
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from kolors_app.creative import dynamic_prompts
from kolors_app.creative import hires
from kolors_app.creative import lora
from kolors_app.creative import styles
from kolors_app.core.params import ValidationError
from kolors_app.creative.upscalers import UpscalerLibrary

HIRES_KEYS = {"upscale": "hires_upscale", "steps": "hires_steps", "upscaler": "hires_upscaler",
              "denoising_strength": "hires_denoising_strength"}


# --- the request's fields as flat parameters (params.py, metadata.py) ---

def request_values(request) -> dict[str, Any]:
    """The creative fields of a request as flat JSON values (only those in use)."""
    values: dict[str, Any] = {}
    if request.styles:
        values["styles"] = list(request.styles)
    if request.loras:
        values["loras"] = [{"name": c.name, "weight": c.weight} if isinstance(c, lora.LoraChoice) else dict(c)
                           for c in request.loras]
    if request.hires is not None:
        fix = request.hires if isinstance(request.hires, hires.HiresFix) else hires.HiresFix(**request.hires)
        values.update({HIRES_KEYS[key]: value for key, value in fix.to_dict().items()})
    return values


def read_values(request, given: dict[str, Any]) -> None:
    """Set a request's creative fields from flat parameters."""
    request.styles = list(given.get("styles") or [])
    request.loras = [lora.LoraChoice(item["name"], item.get("weight", 1.0)) if isinstance(item, dict) else item
                     for item in given.get("loras") or []]
    if "hires_upscale" in given:
        request.hires = {key: given[flat] for key, flat in HIRES_KEYS.items() if flat in given}


def clean_values(values: dict, field_name: str) -> dict[str, Any]:
    """Type checks of the creative keys of a dict from outside (a PNG, a browser); ranges come later."""
    cleaned: dict[str, Any] = {}
    if "styles" in values:
        names = values["styles"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValidationError(f"{field_name}.styles", "must be a list of style names")
        cleaned["styles"] = names[:styles.MAX_STYLES]
    if "loras" in values:
        items = values["loras"]
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str)
                                                  for i in items):
            raise ValidationError(f"{field_name}.loras", "must be a list of {name, weight, hash}")
        cleaned["loras"] = [{k: i[k] for k in ("name", "weight", "hash") if k in i} for i in items[:lora.MAX_LORAS]]
    for flat in HIRES_KEYS.values():
        if flat in values:
            cleaned[flat] = values[flat]
    return cleaned


def validate_part(request, limits) -> dict[str, Any]:
    """Checked copies of the creative fields (names against libraries come in prepare(), before model work)."""
    changes: dict[str, Any] = {"loras": lora.check_choices(request.loras)}
    names = request.styles or []
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValidationError("styles", "must be a list of style names")
    if len(names) > styles.MAX_STYLES:
        raise ValidationError("styles", f"at most {styles.MAX_STYLES} styles at once, got {len(names)}")
    changes["styles"] = list(names)
    for name in ("prompt", "negative_prompt"):
        dynamic_prompts.check(getattr(request, name), name)
    if request.hires is not None:
        if request.init is not None or request.inpaint is not None:
            raise ValidationError("hires", "the hires fix applies to text-to-image (and IP-Adapter without an init "
                                           "image); use the Upscale action for an existing image")
        changes["hires"] = hires.check_hires(request.hires, request.width, request.height,
                                             request.num_inference_steps, limits, None)
    return changes


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
            library = lora.LoraLibrary(settings.lora_dir)
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
    loras: list[lora.LoraChoice]
    hires_size: tuple[int, int] | None = None
    base_size: tuple[int, int] | None = None
    applied: list[lora.AppliedLora] = field(default_factory=list)


def final_prompts(request, seeds: list[int], style_table: dict) -> tuple[list[str], list[str], list[lora.LoraChoice]]:
    """Each image's prompts: LoRA tags removed, styles applied, {a|b} choices drawn from that image's seed."""
    prompt, tags = lora.split_lora_tags(request.prompt)
    negative, negative_tags = lora.split_lora_tags(request.negative_prompt)
    prompt, negative = styles.apply_styles(prompt, negative, request.styles, style_table)
    listed = {choice.name for choice in request.loras}
    choices = list(request.loras) + [tag for tag in tags + negative_tags if tag.name not in listed]
    prompts = [dynamic_prompts.resolve(prompt, seed) for seed in seeds]
    negatives = [dynamic_prompts.resolve(negative, seed) for seed in seeds]
    return prompts, negatives, lora.check_choices(choices)


def prepare(manager, request, seeds: list[int]) -> Prepared:
    """Resolve prompts and check LoRA, style and upscaler names: every unknown one is named before model work."""
    tools = tools_for(manager)
    prompts, negatives, choices = final_prompts(request, seeds, tools.styles())
    for choice in choices:
        tools.loras.get(choice.name)
    size = None
    if request.hires is not None:
        tools.upscalers.check(request.hires.upscaler, "hires_upscaler")
        size = hires.target_size(request.width, request.height, request.hires.upscale, manager.settings.limits)
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


# --- A1111 infotext (metadata.py) ---

def infotext_pairs(params: dict) -> list[tuple[str, Any]]:
    """A1111 labels for the creative parameters: Hires ..., Lora hashes."""
    pairs: list[tuple[str, Any]] = []
    if "hires_upscale" in params:
        fix = {key: params[flat] for key, flat in HIRES_KEYS.items() if flat in params}
        pairs.extend(hires.infotext(fix).items())
    if params.get("loras") and all("hash" in item for item in params["loras"]):
        pairs.append(("Lora hashes", ", ".join(f"{item['name']}: {item['hash']}" for item in params["loras"])))
    return pairs


def infotext_prompts(params: dict) -> tuple[str, str]:
    """The prompts of the A1111 text: those that ran, with the LoRAs as `<lora:name:weight>` as A1111 writes them."""
    prompt = params.get("final_prompt", params.get("prompt")) or ""
    negative = params.get("final_negative_prompt", params.get("negative_prompt")) or ""
    if "final_prompt" in params and params.get("loras"):
        prompt += "".join(f" <lora:{item['name']}:{item.get('weight', 1.0):g}>" for item in params["loras"])
    return prompt, negative


def from_infotext(labels: dict[str, str], prompt: str) -> dict[str, Any]:
    """Creative parameters of an A1111 parameters line: hires settings, and LoRAs from `<lora:..>` plus hashes."""
    found: dict[str, Any] = {}
    fix = hires.from_infotext(labels)
    if fix is not None:
        found.update({HIRES_KEYS[key]: value for key, value in fix.items()})
    hashes = dict(lora.parse_lora_hashes(labels.get("Lora hashes", "")))
    if hashes:
        _, tags = lora.split_lora_tags(prompt)
        weights = {tag.name: tag.weight for tag in tags}
        found["loras"] = [{"name": name, "weight": weights.get(name, 1.0), "hash": short}
                          for name, short in hashes.items()]
    return found


def restore_notes(manager, params: dict) -> tuple[dict, list[str]]:
    """Saved LoRAs matched to this app's (by name, else hash); notes say which are missing here."""
    if not params.get("loras"):
        return params, []
    found, notes = lora.restore_loras(tools_for(manager).loras, params["loras"])
    return {**params, "loras": found}, notes
