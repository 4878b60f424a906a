"""The creative parameters in A1111's infotext: `Hires ...` labels, `Lora hashes` and `<lora:name:weight>` tags."""

from __future__ import annotations

from typing import Any

from kolors_app.core.creative_fields import DEFAULT_STRENGTH, DEFAULT_UPSCALE, HIRES_KEYS, LATENT, HiresFix
from kolors_app.core.errors import ValidationError
from kolors_app.core.prompt_syntax import split_lora_tags

# HiresFix attribute -> A1111 infotext label.
HIRES_LABELS = {"upscale": "Hires upscale", "steps": "Hires steps", "upscaler": "Hires upscaler",
                "denoising_strength": "Denoising strength"}


def hires_infotext(hires: HiresFix | dict | None) -> dict[str, Any]:
    """A1111's labels and values of a hires fix (its attributes as a dict, or the HiresFix) for the parameters line."""
    if not hires:
        return {}
    values = hires.to_dict() if isinstance(hires, HiresFix) else hires
    return {HIRES_LABELS[key]: values[key] for key in HIRES_LABELS if key in values}


def hires_from_infotext(labels: dict[str, str]) -> dict[str, Any] | None:
    """The hires settings (HiresFix attributes) of an A1111 parameters line; None when it has no hires fix."""
    if "Hires upscale" not in labels and "Hires upscaler" not in labels:
        return None
    values: dict[str, Any] = {"upscale": DEFAULT_UPSCALE, "upscaler": LATENT, "steps": 0,
                              "denoising_strength": DEFAULT_STRENGTH}
    try:
        if "Hires upscale" in labels:
            values["upscale"] = float(labels["Hires upscale"])
        if "Hires steps" in labels:
            values["steps"] = int(labels["Hires steps"])
        if "Denoising strength" in labels:
            values["denoising_strength"] = float(labels["Denoising strength"])
    except ValueError as error:
        raise ValidationError("parameters", f"a Hires value is not a number: {error}", "wrong_type") from None
    upscaler = labels.get("Hires upscaler", LATENT)
    # A1111 spells its latent modes "Latent (bicubic)" and so on; they map to our one latent upscaler.
    values["upscaler"] = LATENT if upscaler.startswith("Latent") else upscaler
    return values


def lora_hashes_text(pairs: list[tuple[str, str]]) -> str:
    """A1111's `Lora hashes` value of (name, hash) pairs: "name: hash, name: hash"."""
    return ", ".join(f"{name}: {short}" for name, short in pairs)


def parse_lora_hashes(text: str) -> list[tuple[str, str]]:
    """(name, hash) pairs of an A1111 `Lora hashes` value."""
    pairs = []
    for part in (text or "").strip().strip('"').split(","):
        name, _, short = part.strip().rpartition(":")
        if name:
            pairs.append((name.strip(), short.strip()))
    return pairs


def infotext_pairs(params: dict) -> list[tuple[str, Any]]:
    """A1111 labels for the creative parameters of flat parameters: Hires ..., Lora hashes."""
    pairs: list[tuple[str, Any]] = []
    if "hires_upscale" in params:
        fix = {key: params[flat] for key, flat in HIRES_KEYS.items() if flat in params}
        pairs.extend(hires_infotext(fix).items())
    if params.get("loras") and all("hash" in item for item in params["loras"]):
        pairs.append(("Lora hashes", lora_hashes_text([(item["name"], item["hash"]) for item in params["loras"]])))
    return pairs


def infotext_prompts(params: dict) -> tuple[str, str]:
    """The prompts of the A1111 text: those that ran, with the LoRAs as `<lora:name:weight>` as A1111 writes them."""
    prompt = params.get("final_prompt", params.get("prompt")) or ""
    negative = params.get("final_negative_prompt", params.get("negative_prompt")) or ""
    if "final_prompt" in params and params.get("loras"):
        prompt += "".join(f" <lora:{item['name']}:{item.get('weight', 1.0):g}>" for item in params["loras"])
    return prompt, negative


def from_infotext(labels: dict[str, str], prompt: str) -> dict[str, Any]:
    """Creative flat parameters of an A1111 parameters line: hires settings, and LoRAs from `<lora:..>` plus hashes."""
    found: dict[str, Any] = {}
    fix = hires_from_infotext(labels)
    if fix is not None:
        found.update({HIRES_KEYS[key]: value for key, value in fix.items()})
    hashes = dict(parse_lora_hashes(labels.get("Lora hashes", "")))
    if hashes:
        _, tags = split_lora_tags(prompt)
        weights = {tag.name: tag.weight for tag in tags}
        found["loras"] = [{"name": name, "weight": weights.get(name, 1.0), "hash": short}
                          for name, short in hashes.items()]
    return found
