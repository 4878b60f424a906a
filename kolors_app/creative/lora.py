"""LoRAs for Kolors: find them (folder, Hub), read diffusers/PEFT/kohya files, refuse other models', switch by weight."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kolors_app.core.params import ValidationError
from kolors_app.models.text_encoder import TextEncoderOnCPU

log = logging.getLogger(__name__)

DEFAULT_LORA_DIR = Path("models/lora")
DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"
PEFT_WEIGHTS = "adapter_model.safetensors"
MAX_LORAS = 8
MAX_LOADED = 8
WEIGHT_RANGE = (-4.0, 4.0)
# A1111's prompt syntax: <lora:name> or <lora:name:0.8>.
LORA_TAG = re.compile(r"<lora:([^:<>]+?)(?::\s*(-?\d+(?:\.\d+)?)\s*)?>")
# Signs of a LoRA made for another model family, read from the file's metadata or keys.
FOREIGN_METADATA = {"ss_base_model_version": ("sd_v1", "sd_v2", "sdxl", "sd3", "flux"),
                    "modelspec.architecture": ("stable-diffusion", "flux", "sd3")}
FOREIGN_KEYS = {"text_encoder_2.": "SDXL (a second CLIP text encoder)", "lora_te2_": "SDXL (a second CLIP text encoder)",
                "text_model.": "a CLIP text encoder (SD1.5/SDXL)", "transformer.": "a transformer model (SD3, Flux)",
                "lora_transformer_": "a transformer model (SD3, Flux)"}


class LoraError(ValidationError):
    """A LoRA that cannot be used here; the message says which and why."""

    def __init__(self, message: str):
        super().__init__("loras", message)


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA of a request and its weight."""

    name: str
    weight: float = 1.0


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


def split_lora_tags(prompt: str) -> tuple[str, list[LoraChoice]]:
    """Remove every <lora:name:weight> from the prompt (ChatGLM never sees them); return the text and the choices."""
    choices = [LoraChoice(match.group(1).strip(), float(match.group(2)) if match.group(2) else 1.0)
               for match in LORA_TAG.finditer(prompt or "")]
    text = LORA_TAG.sub("", prompt or "")
    return re.sub(r"\s*,\s*(,\s*)+", ", ", re.sub(r"[ \t]{2,}", " ", text)).strip(" ,"), choices


def check_choices(choices) -> list[LoraChoice]:
    """A request's LoRAs as LoraChoice items: [{"name", "weight"}] or (name, weight) pairs; bad ones named."""
    if choices is None:
        return []
    if not isinstance(choices, (list, tuple)):
        raise LoraError(f"must be a list of {{name, weight}}, got {type(choices).__name__}")
    if len(choices) > MAX_LORAS:
        raise LoraError(f"at most {MAX_LORAS} LoRAs at once, got {len(choices)}")
    checked = []
    for item in choices:
        if isinstance(item, LoraChoice):
            name, weight = item.name, item.weight
        elif isinstance(item, dict):
            name, weight = item.get("name"), item.get("weight", 1.0)
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            name, weight = item
        else:
            raise LoraError(f"each LoRA must be {{name, weight}}, got {item!r}")
        if not isinstance(name, str) or not name.strip():
            raise LoraError(f"a LoRA name must be text, got {name!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not \
                WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1]:
            raise LoraError(f"weight of {name!r} must be a number from {WEIGHT_RANGE[0]} to {WEIGHT_RANGE[1]}, "
                            f"got {weight!r}")
        checked.append(LoraChoice(name.strip(), float(weight)))
    names = [choice.name for choice in checked]
    if len(set(names)) != len(names):
        raise LoraError("each LoRA may be listed once")
    return checked


def looks_like_repo_id(name: str) -> bool:
    """owner/name, as the Hub spells repo ids."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name))


class LoraLibrary:
    """The LoRAs of a folder (scanned on start and on refresh) plus Hub repo ids asked for by name."""

    def __init__(self, folder: str | Path = DEFAULT_LORA_DIR, allow_hub: bool = True):
        self.folder = Path(folder)
        self.allow_hub = allow_hub
        self._entries: dict[str, LoraEntry] = {}
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> list[str]:
        """Scan the folder again: *.safetensors files and folders holding pytorch_lora_weights.safetensors."""
        found: dict[str, LoraEntry] = {}
        if self.folder.is_dir():
            for path in sorted(self.folder.rglob("*.safetensors")):
                if path.name == DIFFUSERS_WEIGHTS:
                    entry = LoraEntry(path.parent.relative_to(self.folder).as_posix(), path.parent)
                elif path.name == PEFT_WEIGHTS:
                    continue  # a text-encoder adapter, read with the LoRA folder that holds it
                else:
                    entry = LoraEntry(path.relative_to(self.folder).with_suffix("").as_posix(), path)
                found[entry.name] = entry
        with self._lock:
            old = self._entries
            # Keep computed hashes of unchanged entries.
            self._entries = {name: old[name] if name in old and old[name].path == entry.path else entry
                             for name, entry in found.items()}
        return self.names()

    def names(self) -> list[str]:
        """Every LoRA of the folder, sorted."""
        return sorted(self._entries)

    def search(self, text: str) -> list[str]:
        """Names containing every word of text (case-insensitive)."""
        words = (text or "").lower().split()
        return [name for name in self.names() if all(word in name.lower() for word in words)]

    def get(self, name: str) -> LoraEntry:
        """The entry for a name or Hub repo id; an unknown name is refused, naming the field."""
        with self._lock:
            if name in self._entries:
                return self._entries[name]
        if self.allow_hub and looks_like_repo_id(name):
            entry = LoraEntry(name, repo_id=name)
            with self._lock:
                self._entries.setdefault(name, entry)
            return entry
        known = ", ".join(self.names()) or f"none; put LoRAs in {self.folder}"
        raise LoraError(f"unknown LoRA {name!r}; known: {known}")

    def find_by_hash(self, short_hash: str) -> LoraEntry | None:
        """The folder's LoRA with this A1111 short hash, if any (hashes every file once)."""
        for name in self.names():
            entry = self._entries[name]
            if entry.path is not None and entry.hash == short_hash:
                return entry
        return None


def text_encoder_module_names(text_encoder) -> dict[str, str]:
    """kohya spells a module path with underscores: map that spelling back to the real name."""
    return {name.replace(".", "_"): name for name, _ in text_encoder.named_modules() if name}


def read_lora(entry: LoraEntry, text_encoder=None) -> tuple[dict, dict]:
    """(U-Net layers in diffusers form with network alphas, ChatGLM layers in PEFT form) of one LoRA."""
    from diffusers import KolorsPipeline
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


def adapter_name(entry: LoraEntry) -> str:
    """PEFT adapter names are keys of module dicts: no dots; the hash keeps two files of one name apart."""
    return f"lora_{entry.hash}"


@dataclass(frozen=True)
class AppliedLora:
    """A LoRA as it ran: for metadata (A1111's Lora hashes) and the embedding cache key."""

    name: str
    weight: float
    hash: str
    text_encoder: bool


class LoraSwitcher:
    """Keeps up to max_loaded adapters in the shared U-Net/ChatGLM and switches them by weight, least recent dropped."""

    def __init__(self, library: LoraLibrary, max_loaded: int = MAX_LOADED):
        self.library = library
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, AppliedLora] = OrderedDict()  # adapter name -> what it holds
        self.loads = 0

    def apply(self, pipe, choices: list[LoraChoice], unet=None) -> list[AppliedLora]:
        """Make exactly these LoRAs active at these weights on pipe's modules (shared by every mode's pipeline).

        `unet`: another U-Net the run uses (Kolors-Inpainting's), given the same U-Net adapters.
        """
        choices = check_choices(choices)
        entries = [self.library.get(choice.name) for choice in choices]
        for entry in entries:
            self._ensure_loaded(pipe, entry, keep={adapter_name(e) for e in entries})
        applied = [AppliedLora(c.name, c.weight, e.hash, self._loaded[adapter_name(e)].text_encoder)
                   for c, e in zip(choices, entries)]
        names = [adapter_name(entry) for entry in entries]
        if not self._loaded:
            pass  # nothing was ever loaded: the model is untouched
        elif not names:
            pipe.disable_lora()
        else:
            pipe.enable_lora()
            pipe.set_adapters(names, [choice.weight for choice in choices])
        if unet is not None and unet is not pipe.unet:
            self._apply_to_unet(pipe, unet, entries, [choice.weight for choice in choices])
        # The prompt cache keys on the text-encoder adapters in use (kolors_app/models/embeddings.py reads this).
        identity = [[a.hash, a.weight] for a in applied if a.text_encoder and a.weight != 0]
        pipe.text_encoder.kolors_lora_identity = json.dumps(identity) if identity else ""
        return applied

    def _ensure_loaded(self, pipe, entry: LoraEntry, keep: set[str]) -> None:
        name = adapter_name(entry)
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return
        text_encoder = _real_text_encoder(pipe)
        unet_part, text_layers = read_lora(entry, text_encoder)
        pairs = unet_pairs(unet_part["state"], pipe.unet.config)
        if not pairs and not text_layers:
            raise LoraError(f"{entry.name!r} holds no LoRA layers")
        check_shapes(entry.name, pairs, pipe.unet, "U-Net")
        check_shapes(entry.name, text_pairs(text_layers), text_encoder, "text encoder")
        while len(self._loaded) >= self.max_loaded:
            oldest = next((n for n in self._loaded if n not in keep), None)
            if oldest is None:
                break
            self._release(pipe, oldest)
        if pairs:
            # Always through the base KolorsPipeline: the image-to-image pipeline's SDXL loader wants a
            # second text encoder; the modules are shared, so every mode sees the adapter.
            pipe.load_lora_weights(unet_part["state"], adapter_name=name)
        if text_layers:
            _load_text_adapter(text_encoder, name, text_layers)
        self._loaded[name] = AppliedLora(entry.name, 1.0, entry.hash, bool(text_layers))
        self.loads += 1
        log.info("loaded LoRA %s (%s)", entry.name, name)

    def _apply_to_unet(self, pipe, unet, entries: list[LoraEntry], weights: list[float]) -> None:
        """The U-Net layers of these LoRAs into another U-Net (loaded once each), switched by weight there too."""
        from diffusers import KolorsPipeline

        names = [adapter_name(entry) for entry in entries]
        present = set(getattr(unet, "peft_config", {}) or {})
        for name in present - set(self._loaded):
            unet.delete_adapters([name])  # released from the base U-Net meanwhile: released here too
        for entry, name in zip(entries, names):
            if name not in present:
                raw = read_lora(entry, _real_text_encoder(pipe))[0]["state"]
                state, alphas = KolorsPipeline.lora_state_dict(raw, unet_config=unet.config)
                if any(key.startswith("unet.") for key in state):
                    KolorsPipeline.load_lora_into_unet(state, alphas, unet, adapter_name=name)
        present = set(getattr(unet, "peft_config", {}) or {})
        active = [(name, weight) for name, weight in zip(names, weights) if name in present]
        if active:
            unet.enable_lora()
            unet.set_adapters([name for name, _ in active], [weight for _, weight in active])
        elif present:
            unet.disable_lora()

    def _release(self, pipe, name: str) -> None:
        pipe.delete_adapters([name])
        del self._loaded[name]
        log.info("released LoRA adapter %s", name)

    @property
    def loaded(self) -> list[str]:
        """Names of the LoRAs whose adapters are in memory, least recently used first."""
        return [applied.name for applied in self._loaded.values()]


def _real_text_encoder(pipe):
    # A text encoder kept on the CPU is wrapped (kolors_app/models/text_encoder.py); adapters go into the model itself.
    encoder = pipe.text_encoder
    return encoder.encoder if isinstance(encoder, TextEncoderOnCPU) else encoder


def _load_text_adapter(text_encoder, name: str, layers: dict) -> None:
    """PEFT layers into ChatGLM: diffusers' loader only knows CLIP's module names, so transformers' load_adapter."""
    from peft import LoraConfig

    pairs = text_pairs(layers)
    rank = next(iter(pairs.values()))[0].shape[0]
    targets = sorted({module.rsplit(".", 1)[-1] for module in pairs})
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets)
    text_encoder.load_adapter(adapter_name=name, adapter_state_dict=layers, peft_config=config)


def lora_hashes_text(applied: list[AppliedLora]) -> str:
    """A1111's `Lora hashes` value: "name: hash, name: hash"."""
    return ", ".join(f"{a.name}: {a.hash}" for a in applied)


def parse_lora_hashes(text: str) -> list[tuple[str, str]]:
    """(name, hash) pairs of an A1111 `Lora hashes` value."""
    pairs = []
    for part in (text or "").strip().strip('"').split(","):
        name, _, short = part.strip().rpartition(":")
        if name:
            pairs.append((name.strip(), short.strip()))
    return pairs


def restore_loras(library: LoraLibrary, saved: list[dict]) -> tuple[list[dict], list[str]]:
    """Saved LoRAs ({name, weight, hash}) matched here by name, else by hash; and notes on those missing."""
    found, notes = [], []
    for item in saved:
        name, short = item.get("name", ""), item.get("hash", "")
        entry = None
        if name in library.names():
            entry = library.get(name)
            if short and entry.hash != short:
                notes.append(f"LoRA {name!r} is here with another hash ({entry.hash}, saved {short})")
        elif short:
            entry = library.find_by_hash(short)
            if entry is not None:
                notes.append(f"LoRA {name!r} found by its hash as {entry.name!r}")
        if entry is None:
            notes.append(f"LoRA {name!r} ({short or 'no hash'}) is missing here")
            continue
        found.append({"name": entry.name, "weight": float(item.get("weight", 1.0))})
    return found, notes
