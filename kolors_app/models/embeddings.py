"""Caches for work that repeats between runs: prompt embeddings and IP-Adapter image embeddings."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from kolors_app.patches.accelerate import offload_device
from kolors_app.patches.diffusers import execution_device

# KolorsPipeline.__call__ always encodes prompts padded to this length (it passes no other).
MAX_SEQUENCE_LENGTH = 256
DISK_MAX_FILES = 4000


@dataclass(frozen=True)
class TextEmbedding:
    """The text encoder's output for one text: penultimate hidden states and the pooled vector."""

    hidden: torch.Tensor  # (1, MAX_SEQUENCE_LENGTH, hidden size)
    pooled: torch.Tensor  # (1, hidden size)

    @property
    def nbytes(self) -> int:
        """Memory the two tensors hold."""
        return tensor_bytes(self.hidden, self.pooled)


def tensor_bytes(*tensors: torch.Tensor) -> int:
    """Bytes held by these tensors."""
    return sum(t.numel() * t.element_size() for t in tensors)


class LRUCache:
    """A thread-safe least-recently-used map capped by total bytes; counts hits and misses."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key):
        """The value for key (and count a hit), or None (and count a miss)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key, value, nbytes: int) -> None:
        """Keep value, dropping the least recently used entries beyond the byte cap."""
        if nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                self._bytes -= self._sizes.pop(key)
                del self._items[key]
            self._items[key] = value
            self._sizes[key] = nbytes
            self._bytes += nbytes
            while self._bytes > self.max_bytes:
                oldest, _ = self._items.popitem(last=False)
                self._bytes -= self._sizes.pop(oldest)

    def clear(self) -> None:
        """Forget every entry and reset the counters."""
        with self._lock:
            self._items.clear()
            self._sizes.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict:
        """Entries, bytes, hits and misses, for logs and benchmarks."""
        return {"entries": len(self._items), "bytes": self._bytes, "hits": self.hits, "misses": self.misses}


class DiskStore:
    """Prompt embeddings as safetensors files, one per key, for plans where encoding costs seconds."""

    def __init__(self, folder: Path, max_files: int = DISK_MAX_FILES):
        self.folder = Path(folder)
        self.max_files = max_files
        self.hits = 0

    def _path(self, key_text: str) -> Path:
        return self.folder / f"{hashlib.sha256(key_text.encode()).hexdigest()}.safetensors"

    def load(self, key_text: str) -> TextEmbedding | None:
        """The stored embedding for this key, or None."""
        from safetensors import safe_open

        path = self._path(key_text)
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as file:
            # The full key is stored too: a file is used only for exactly the key it was written for.
            if (file.metadata() or {}).get("key") != key_text:
                return None
            self.hits += 1
            return TextEmbedding(file.get_tensor("hidden"), file.get_tensor("pooled"))

    def save(self, key_text: str, embedding: TextEmbedding) -> None:
        """Write one embedding atomically, then drop the oldest files beyond the cap."""
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(key_text)
        staging = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        tensors = {"hidden": embedding.hidden.detach().cpu().contiguous(),
                   "pooled": embedding.pooled.detach().cpu().contiguous()}
        save_file(tensors, str(staging), metadata={"key": key_text})
        os.replace(staging, path)
        self._prune()

    def _prune(self) -> None:
        files = sorted(self.folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        for old in files[:max(0, len(files) - self.max_files)]:
            old.unlink(missing_ok=True)


def compute_device(pipe, module) -> torch.device:
    """Where a module computes: the offload device when hooks move it, else where its weights are."""
    offloaded_to = offload_device(module)
    if offloaded_to is not None:  # model offload
        return torch.device(offloaded_to)
    device = next(module.parameters()).device
    # Sequential offload leaves the weights on "meta"; asking the pipeline is slower, so only then.
    return execution_device(pipe) if device.type == "meta" else device


def text_encoder_identity(pipe) -> str:
    """Model, precision and compute device of the text encoder: the embeddings change with any of them."""
    encoder = pipe.text_encoder
    config = encoder.config
    quantization = getattr(config, "quantization_config", None)
    architecture = hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest()[:16]
    weights = next(encoder.parameters()).dtype
    # Text-encoder LoRAs in use change the embeddings too (set by kolors_app/creative/lora.py).
    return json.dumps([config.name_or_path, architecture, str(weights), str(encoder.dtype), str(quantization),
                       compute_device(pipe, encoder).type, getattr(encoder, "kolors_lora_identity", "")])


def image_identity(image: Image.Image) -> str:
    """A hash of the image's content: a new upload of the same picture gives the same key."""
    digest = hashlib.blake2b(f"{image.mode} {image.width}x{image.height}".encode(), digest_size=20)
    digest.update(image.tobytes())
    return digest.hexdigest()


def uses_guidance(pipe, guidance_scale: float) -> bool:
    """Whether the pipeline runs classifier-free guidance (the same test as its own property)."""
    return guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None


def _batched(tensor: torch.Tensor, count: int) -> torch.Tensor:
    return tensor.repeat(count, *[1] * (tensor.dim() - 1)) if count > 1 else tensor


class EmbeddingCaches:
    """The prompt-embedding and IP-Adapter image-embedding caches of one loaded model."""

    def __init__(self, max_bytes: int, disk_dir: Path | None = None):
        self.prompts = LRUCache(max_bytes)
        self.images = LRUCache(max_bytes)
        self.disk = DiskStore(disk_dir) if disk_dir else None

    def text(self, pipe, text: str) -> TextEmbedding:
        """The embedding of one text, computed by the pipeline's own encode_prompt on a miss."""
        key = json.dumps([text_encoder_identity(pipe), MAX_SEQUENCE_LENGTH, text], ensure_ascii=False)
        found = self.prompts.get(key)
        if found is None and self.disk is not None:
            found = self.disk.load(key)
            if found is not None:
                self.prompts.put(key, found, found.nbytes)
        if found is not None:
            return found
        with torch.no_grad():
            # One text per forward, as the pipeline does: a batched forward could round differently.
            hidden, _, pooled, _ = pipe.encode_prompt(
                text, device=compute_device(pipe, pipe.text_encoder), num_images_per_prompt=1,
                do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH)
        # Kept in CPU memory: no GPU memory is held between runs, and the copy back costs well under a millisecond.
        found = TextEmbedding(hidden.cpu(), pooled.cpu())
        self.prompts.put(key, found, found.nbytes)
        if self.disk is not None:
            self.disk.save(key, found)
        return found

    def prompt_arguments(self, pipe, prompt: str, negative_prompt: str, count: int,
                         guidance_scale: float) -> dict[str, torch.Tensor]:
        """prompt_embeds and friends for a batch of count images; the pipeline moves them to its device."""
        positive = self.text(pipe, prompt)
        arguments = {"prompt_embeds": _batched(positive.hidden, count),
                     "pooled_prompt_embeds": _batched(positive.pooled, count)}
        if uses_guidance(pipe, guidance_scale):
            negative = self.text(pipe, negative_prompt)
            arguments.update(negative_prompt_embeds=_batched(negative.hidden, count),
                             negative_pooled_prompt_embeds=_batched(negative.pooled, count))
        return arguments

    def ip_adapter_arguments(self, pipe, image: Image.Image, guidance_scale: float) -> dict[str, Any]:
        """ip_adapter_image_embeds for one reference image; the adapter's scale is not part of the key."""
        encoder = pipe.image_encoder
        projection = type(pipe.unet.encoder_hid_proj.image_projection_layers[0]).__name__
        device = compute_device(pipe, encoder)
        key = (image_identity(image), encoder.config.name_or_path, str(encoder.dtype), projection, device.type)
        embeds = self.images.get(key)
        if embeds is None:
            with torch.no_grad():
                # Computed once with guidance: each tensor holds (unconditional, conditional) halves.
                embeds = [t.cpu() for t in pipe.prepare_ip_adapter_image_embeds(image, None, device, 1, True)]
            self.images.put(key, embeds, tensor_bytes(*embeds))
        if not uses_guidance(pipe, guidance_scale):
            embeds = [tensor.chunk(2)[1] for tensor in embeds]
        return {"ip_adapter_image_embeds": embeds}

    def clear(self) -> None:
        """Forget the in-memory entries (the disk store is kept)."""
        self.prompts.clear()
        self.images.clear()

    def stats(self) -> dict:
        """Both caches' counters, plus disk hits when the disk store is on."""
        stats = {"prompts": self.prompts.stats(), "images": self.images.stats()}
        if self.disk is not None:
            stats["disk_hits"] = self.disk.hits
        return stats


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def caches_for(manager) -> EmbeddingCaches:
    """The caches of this pipeline manager, made on first use from its settings."""
    with _CACHES_LOCK:
        if manager not in _CACHES:
            settings = manager.settings
            _CACHES[manager] = EmbeddingCaches(settings.embedding_cache_mb * 2**20, settings.embedding_cache_dir)
        return _CACHES[manager]
