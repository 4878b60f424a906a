"""LoRAs for Kolors: the library (a folder and Hub repos) and the switcher that keeps them loaded by weight."""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path


from kolors_app.core.config import Settings, on_spaces
from kolors_app.core.creative_fields import LoraChoice
from kolors_app.core.hub_names import allow_list, allowed, is_repo_id
from kolors_app.core.schema import read_lora_choices
from kolors_app.creative.lora_files import (DIFFUSERS_WEIGHTS, PEFT_WEIGHTS, LoraEntry, LoraError, TextLayers,
                                            check_file, check_shapes, read_lora, text_lora_config, text_pairs,
                                            unet_pairs)
from kolors_app.hub.lora_download import MB, download_lora
from kolors_app.models.text_encoder import TextEncoderOnCPU

log = logging.getLogger(__name__)

DEFAULT_LORA_DIR = Path("models/lora")
MAX_LOADED = 8
MAX_HUB_LORAS = 32  # Hub LoRAs the library keeps listed, the least recently used dropped
MAX_KNOWN_SHOWN = 20  # names an "unknown LoRA" error lists


@dataclass(frozen=True)
class HubAccess:
    """Which Hub repos a LoRA name may download from (`allowed` None: any) and the largest file taken."""

    allowed: tuple[str, ...] | None = None
    max_bytes: int = 1024 * MB

    @classmethod
    def of(cls, settings: Settings) -> HubAccess:
        """From --lora-hub-allow and --lora-max-mb; left at auto, a public app downloads nothing a stranger names."""
        items = allow_list(settings.lora_hub_allow)
        if items is None and (settings.share or on_spaces()):
            items = ()
        return cls(items, settings.lora_max_mb * MB)

    def permits(self, name: str) -> bool:
        """Whether name is a Hub repo id this server may download."""
        return is_repo_id(name) and (self.allowed is None or allowed(name, self.allowed))


class LoraLibrary:
    """The LoRAs of a folder (scanned on start and on refresh) plus the Hub repos fetched by name.

    A Hub repo is listed only once its file is here and read as a Kolors LoRA; at most MAX_HUB_LORAS are kept.
    """

    def __init__(self, folder: str | Path = DEFAULT_LORA_DIR, hub: HubAccess = HubAccess()):
        self.folder = Path(folder)
        self.hub = hub
        self._entries: dict[str, LoraEntry] = {}
        self._hub: OrderedDict[str, LoraEntry] = OrderedDict()
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
        """Every LoRA of the folder and every Hub LoRA fetched, sorted."""
        with self._lock:
            return sorted({*self._entries, *self._hub})

    def search(self, text: str) -> list[str]:
        """Names containing every word of text (case-insensitive)."""
        words = (text or "").lower().split()
        return [name for name in self.names() if all(word in name.lower() for word in words)]

    def get(self, name: str) -> LoraEntry:
        """The entry of a folder LoRA or a fetched Hub LoRA; never reaches the network (see fetch)."""
        with self._lock:
            if name in self._entries:
                return self._entries[name]
            if name in self._hub:
                self._hub.move_to_end(name)
                return self._hub[name]
        raise self._unknown(name)

    def check(self, name: str) -> None:
        """Refuse, without reaching the network, a name that is neither here nor a Hub repo this server may fetch."""
        with self._lock:
            if name in self._entries or name in self._hub:
                return
        if not self.hub.permits(name):
            raise self._unknown(name)

    def fetch(self, name: str) -> LoraEntry:
        """The entry of name, downloading a permitted Hub repo's file first (size checked from the Hub's metadata).

        Called before a job waits for the GPU slot; the name is listed only once its file reads as a Kolors LoRA.
        """
        self.check(name)
        with self._lock:
            if name in self._entries or name in self._hub:
                return self._entries.get(name) or self._hub[name]
        entry = LoraEntry(name, download_lora(name, DIFFUSERS_WEIGHTS, self.hub.max_bytes), repo_id=name)
        check_file(entry)
        entry.hash  # noqa: B018  (reads the whole file once, here rather than in the GPU slot)
        with self._lock:
            self._hub[name] = entry
            self._hub.move_to_end(name)
            while len(self._hub) > MAX_HUB_LORAS:
                self._hub.popitem(last=False)
        log.info("fetched Hub LoRA %s", name)
        return entry

    def _unknown(self, name: str) -> LoraError:
        """The refusal of a name that is not here: the known names, never a server folder."""
        names = self.names()
        known = ", ".join(names[:MAX_KNOWN_SHOWN]) + (f" and {len(names) - MAX_KNOWN_SHOWN} more"
                                                      if len(names) > MAX_KNOWN_SHOWN else "")
        hint = ""
        if self.hub.permits(name):  # dropped from the kept Hub LoRAs since the job was checked
            hint = " (a Hub LoRA no longer kept here: send the request again)"
        elif is_repo_id(name):
            hint = (" (this server downloads no Hub LoRAs)" if self.hub.allowed == () else
                    " (this server downloads only the Hub LoRAs its operator allows)")
        return LoraError(f"unknown LoRA {name!r}{hint}; known: {known or 'none'}")

    def find_by_hash(self, short_hash: str) -> LoraEntry | None:
        """The folder's LoRA with this A1111 short hash, if any (hashes every file once)."""
        for name in sorted(self._entries):
            entry = self._entries[name]
            if entry.hash == short_hash:
                return entry
        return None


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
        choices = read_lora_choices(choices)
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
        check_shapes(entry.name, text_pairs(text_layers.state), text_encoder, "text encoder")
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


def _load_text_adapter(text_encoder, name: str, text: TextLayers) -> None:
    """PEFT layers into ChatGLM: diffusers' loader only knows CLIP's module names, so transformers' load_adapter.

    Scaled as trained: kohya's alphas, or the adapter's adapter_config.json (text_lora_config).
    """
    text_encoder.load_adapter(adapter_name=name, adapter_state_dict=text.state, peft_config=text_lora_config(text))


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
