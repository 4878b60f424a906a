"""LoRA files: diffusers, PEFT and kohya layouts read into layers, their A1111 hash, other models' files refused."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kolors_app.core.errors import ValidationError

DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"
PEFT_WEIGHTS = "adapter_model.safetensors"
# Signs of a LoRA made for another model family, read from the file's metadata or keys.
FOREIGN_METADATA = {"ss_base_model_version": ("sd_v1", "sd_v2", "sdxl", "sd3", "flux"),
                    "modelspec.architecture": ("stable-diffusion", "flux", "sd3")}
FOREIGN_KEYS = {"text_encoder_2.": "SDXL (a second CLIP text encoder)",
                "lora_te2_": "SDXL (a second CLIP text encoder)",
                "text_model.": "a CLIP text encoder (SD1.5/SDXL)", "transformer.": "a transformer model (SD3, Flux)",
                "lora_transformer_": "a transformer model (SD3, Flux)"}


class LoraError(ValidationError):
    """A LoRA that cannot be used here; the message says which and why."""

    def __init__(self, message: str):
        super().__init__("loras", message)


@dataclass
class LoraEntry:
    """A LoRA the app can use: a file, a folder in diffusers layout, or a Hub repo id."""

    name: str
    path: Path | None = None
    repo_id: str | None = None
    _hash: str | None = field(default=None, repr=False)

    @property
    def weights_file(self) -> Path:
        """The safetensors file that holds the U-Net (and maybe text-encoder) layers."""
        if self.path is None:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(self.repo_id, DIFFUSERS_WEIGHTS))
        return self.path / DIFFUSERS_WEIGHTS if self.path.is_dir() else self.path

    @property
    def hash(self) -> str:
        """A1111's short hash (first 12 hex digits of the sha256 of the tensor data, its 'addnet' hash)."""
        if self._hash is None:
            self._hash = addnet_hash(self.weights_file)[:12]
        return self._hash


def addnet_hash(path: Path) -> str:
    """sha256 of a safetensors file without its JSON header (what A1111 shows for LoRAs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        header = struct.unpack("<Q", file.read(8))[0]
        file.seek(8 + header)
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_encoder_module_names(text_encoder) -> dict[str, str]:
    """kohya spells a module path with underscores: map that spelling back to the real name."""
    return {name.replace(".", "_"): name for name, _ in text_encoder.named_modules() if name}


def read_lora(entry: LoraEntry, text_encoder=None) -> tuple[dict, dict]:
    """(U-Net layers in diffusers form with network alphas, ChatGLM layers in PEFT form) of one LoRA."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = entry.weights_file
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
    raw = load_file(str(path))
    check_family(entry.name, raw, metadata)
    text_layers = {k.removeprefix("text_encoder."): v for k, v in raw.items() if k.startswith("text_encoder.")}
    kohya_text = {k: v for k, v in raw.items() if k.startswith("lora_te_") or k.startswith("lora_te1_")}
    if kohya_text:
        text_layers.update(_kohya_text_layers(entry.name, kohya_text, text_encoder))
    peft_folder = _peft_folder(entry)
    if peft_folder is not None:
        adapter = load_file(str(peft_folder / PEFT_WEIGHTS))
        text_layers.update({k.removeprefix("base_model.model."): v for k, v in adapter.items()})
    unet_raw = {k: v for k, v in raw.items() if not (k.startswith("text_encoder.") or k in kohya_text)}
    return {"state": unet_raw}, text_layers


def _peft_folder(entry: LoraEntry) -> Path | None:
    """A PEFT adapter for ChatGLM beside the U-Net weights (any subfolder holding adapter_model.safetensors)."""
    if entry.path is None or not entry.path.is_dir():
        return None
    found = sorted(entry.path.rglob(PEFT_WEIGHTS))
    return found[0].parent if found else None


def _kohya_text_layers(name: str, state: dict, text_encoder) -> dict:
    """lora_te_<module>.lora_down/up.weight keys as PEFT keys of ChatGLM's modules."""
    if text_encoder is None:
        raise LoraError(f"{name!r} has kohya text-encoder layers but no text encoder is loaded")
    modules = text_encoder_module_names(text_encoder)
    layers = {}
    for key, value in state.items():
        stem, _, part = key.partition(".")
        if part == "alpha":
            continue
        module = modules.get(stem.split("_", 2)[2])
        if module is None:
            raise LoraError(f"{name!r} targets text-encoder module {stem!r}, which ChatGLM does not have "
                            "(is it a LoRA for a CLIP model?)")
        layers[f"{module}.lora_{'A' if part.startswith('lora_down') else 'B'}.weight"] = value
    return layers


def check_family(name: str, raw: dict, metadata: dict) -> None:
    """Refuse a LoRA whose metadata or keys say it was made for another model, before any weight is touched."""
    for key, families in FOREIGN_METADATA.items():
        value = str(metadata.get(key, "")).lower()
        if value and any(value.startswith(family) for family in families) and "kolors" not in value:
            raise LoraError(f"{name!r} was made for {metadata[key]!r}, not Kolors")
    for prefix, family in FOREIGN_KEYS.items():
        if any(key.startswith(prefix) or f".{prefix}" in key for key in raw):
            raise LoraError(f"{name!r} is a LoRA for {family}, not Kolors")


def _module_size(module) -> tuple[int, int] | None:
    weight = getattr(module, "base_layer", module)
    if isinstance(weight, torch.nn.Linear):
        return weight.in_features, weight.out_features
    if isinstance(weight, torch.nn.Conv2d):
        return weight.in_channels, weight.out_channels
    return None


def check_shapes(name: str, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], model, model_name: str) -> None:
    """Every (down, up) pair must target an existing layer of model with its in/out width."""
    for module_name, (down, up) in pairs.items():
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            raise LoraError(f"{name!r} targets {model_name} layer {module_name!r}, which Kolors does not have: "
                            "it is a LoRA for another model (SD1.5, SDXL...)") from None
        size = _module_size(module)
        if size is None or down.shape[1] != size[0] or up.shape[0] != size[1]:
            raise LoraError(f"{name!r} does not fit Kolors: {model_name} layer {module_name!r} takes {size} "
                            f"(in, out) but the LoRA has {(down.shape[1], up.shape[0])}; it is a LoRA for another "
                            "model (SD1.5, SDXL...)")


def unet_pairs(state: dict, unet_config) -> dict:
    """(down, up) per U-Net module of a LoRA file, any format diffusers reads, without touching a model."""
    from diffusers import KolorsPipeline

    try:
        converted, _ = KolorsPipeline.lora_state_dict(dict(state), unet_config=unet_config)
    except (ValueError, KeyError) as error:
        raise LoraError(f"is not a LoRA diffusers can read: {error}") from None
    pairs: dict[str, list] = {}
    for key, value in converted.items():
        if not key.startswith("unet."):
            continue
        for down, up in ((".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight"),
                         ("_lora.down.weight", "_lora.up.weight")):
            if key.endswith(down) or key.endswith(up):
                module = key[len("unet."):].rsplit(down if key.endswith(down) else up, 1)[0]
                module = module.replace(".processor.", ".").replace("to_out", "to_out.0") \
                    if ".processor." in module else module
                pairs.setdefault(module, [None, None])[0 if key.endswith(down) else 1] = value
    return {name: (d, u) for name, (d, u) in pairs.items() if d is not None and u is not None}


def text_pairs(layers: dict) -> dict:
    """(down, up) per ChatGLM module of PEFT-form layers."""
    pairs: dict[str, list] = {}
    for key, value in layers.items():
        module, _, part = key.rpartition(".lora_")
        pairs.setdefault(module, [None, None])[0 if part.startswith("A") else 1] = value
    return {name: tuple(pair) for name, pair in pairs.items()}
