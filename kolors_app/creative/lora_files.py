"""LoRA files: diffusers, PEFT and kohya layouts read into layers, their A1111 hash, other models' files refused."""

from __future__ import annotations

import collections
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kolors_app.core.errors import ValidationError

DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
# What diffusers' save_lora_weights writes into the file's metadata: each part's LoraConfig values, prefixed.
DIFFUSERS_METADATA = "lora_adapter_metadata"
# The LoraConfig values that decide how a LoRA is scaled (alpha / r, or alpha / sqrt(r) with rsLoRA).
SCALING_KEYS = ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora")
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
    """A LoRA the app can use: a file, a folder in diffusers layout, or the file downloaded from a Hub repo."""

    name: str
    path: Path
    repo_id: str | None = None
    _hash: str | None = field(default=None, repr=False)

    @property
    def weights_file(self) -> Path:
        """The safetensors file that holds the U-Net (and maybe text-encoder) layers."""
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


@dataclass
class TextLayers:
    """ChatGLM's layers of a LoRA in PEFT form and what scales them: an alpha per module, or the adapter's config."""

    state: dict = field(default_factory=dict)
    alphas: dict[str, float] = field(default_factory=dict)  # module -> alpha (kohya's `alpha` keys)
    config: dict = field(default_factory=dict)  # LoraConfig values (adapter_config.json, diffusers' metadata)

    def __bool__(self) -> bool:
        return bool(self.state)


def check_file(entry: LoraEntry) -> None:
    """A safetensors file holding LoRA layers for Kolors, read from its header alone (no tensor is loaded)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(entry.weights_file), framework="pt") as file:
            metadata, keys = file.metadata() or {}, list(file.keys())
    except (SafetensorError, OSError):
        raise LoraError(f"{entry.name!r} is not a safetensors file") from None
    check_family(entry.name, dict.fromkeys(keys), metadata)
    if not any("lora" in key.lower() for key in keys):
        raise LoraError(f"{entry.name!r} holds no LoRA layers")


def read_lora(entry: LoraEntry, text_encoder=None) -> tuple[dict, TextLayers]:
    """(U-Net layers in diffusers form with network alphas, ChatGLM layers in PEFT form) of one LoRA."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = entry.weights_file
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
    raw = load_file(str(path))
    check_family(entry.name, raw, metadata)
    text = TextLayers(config=_diffusers_text_config(entry.name, metadata))
    for key, value in raw.items():
        if key.startswith("text_encoder.") and key.endswith(".alpha"):
            text.alphas[key.removeprefix("text_encoder.").removesuffix(".alpha")] = float(value)
        elif key.startswith("text_encoder."):
            text.state[key.removeprefix("text_encoder.")] = value
    kohya_text = {k: v for k, v in raw.items() if k.startswith("lora_te_") or k.startswith("lora_te1_")}
    if kohya_text:
        layers, alphas = _kohya_text_layers(entry.name, kohya_text, text_encoder)
        text.state.update(layers)
        text.alphas.update(alphas)
    peft_folder = _peft_folder(entry)
    if peft_folder is not None:
        adapter = load_file(str(peft_folder / PEFT_WEIGHTS))
        text.state.update({k.removeprefix("base_model.model."): v for k, v in adapter.items()})
        text.config.update(_peft_config(entry.name, peft_folder))
    unet_raw = {k: v for k, v in raw.items() if not (k.startswith("text_encoder.") or k in kohya_text)}
    return {"state": unet_raw}, text


def _diffusers_text_config(name: str, metadata: dict) -> dict:
    """The text encoder's LoraConfig values diffusers wrote into the file's metadata, if any."""
    if DIFFUSERS_METADATA not in metadata:
        return {}
    try:
        values = json.loads(metadata[DIFFUSERS_METADATA])
    except ValueError:
        raise LoraError(f"{name!r} has unreadable {DIFFUSERS_METADATA} metadata") from None
    prefix = "text_encoder."
    return {k.removeprefix(prefix): v for k, v in values.items()
            if k.startswith(prefix) and k.removeprefix(prefix) in SCALING_KEYS} if isinstance(values, dict) else {}


def _peft_config(name: str, folder: Path) -> dict:
    """The scaling values of a PEFT adapter's adapter_config.json (none: PEFT's defaults, alpha = r)."""
    path = folder / PEFT_CONFIG
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise LoraError(f"{name!r} has an unreadable {PEFT_CONFIG}") from None
    return {key: values[key] for key in SCALING_KEYS if isinstance(values, dict) and values.get(key) is not None}


def text_lora_config(text: TextLayers):
    """The LoraConfig that scales ChatGLM's layers as they were trained: alpha / r per module."""
    from peft import LoraConfig

    pairs = text_pairs(text.state)
    ranks = {module: down.shape[0] for module, (down, _up) in pairs.items()}
    targets = sorted({module.rsplit(".", 1)[-1] for module in pairs})
    rank = text.config.get("r") or collections.Counter(ranks.values()).most_common(1)[0][0]
    rank_pattern = {re.escape(module): value for module, value in ranks.items() if value != rank}
    if text.config:  # the adapter's own config says how it scales
        return LoraConfig(**{"rank_pattern": rank_pattern, **text.config, "r": rank, "target_modules": targets})
    # Without an alpha a module is scaled by 1 (alpha = r), as diffusers and PEFT save LoRAs.
    alphas = {module: text.alphas.get(module, float(ranks[module])) for module in pairs}
    alpha = collections.Counter(alphas.values()).most_common(1)[0][0]
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, rank_pattern=rank_pattern,
                      alpha_pattern={re.escape(module): value for module, value in alphas.items() if value != alpha})


def _peft_folder(entry: LoraEntry) -> Path | None:
    """A PEFT adapter for ChatGLM beside the U-Net weights (any subfolder holding adapter_model.safetensors)."""
    if entry.path is None or not entry.path.is_dir():
        return None
    found = sorted(entry.path.rglob(PEFT_WEIGHTS))
    return found[0].parent if found else None


def _kohya_text_layers(name: str, state: dict, text_encoder) -> tuple[dict, dict[str, float]]:
    """lora_te_<module>.lora_down/up.weight keys as PEFT keys of ChatGLM's modules, and each module's alpha."""
    if text_encoder is None:
        raise LoraError(f"{name!r} has kohya text-encoder layers but no text encoder is loaded")
    modules = text_encoder_module_names(text_encoder)
    layers, alphas = {}, {}
    for key, value in state.items():
        stem, _, part = key.partition(".")
        module = modules.get(stem.split("_", 2)[2])
        if module is None:
            raise LoraError(f"{name!r} targets text-encoder module {stem!r}, which ChatGLM does not have "
                            "(is it a LoRA for a CLIP model?)")
        if part == "alpha":
            alphas[module] = float(value)
        else:
            layers[f"{module}.lora_{'A' if part.startswith('lora_down') else 'B'}.weight"] = value
    return layers, alphas


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
