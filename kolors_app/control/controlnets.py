"""The loaded Kolors ControlNets: loaded on first use (downloaded with progress), released beyond a budget."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable

import torch

from kolors_app.hub import downloads
from kolors_app.core.addons import PATTERNS

log = logging.getLogger(__name__)
# How many ControlNets stay loaded when no budget in bytes is known (CPU, MPS): the three types.
DEFAULT_KEPT = 3


def controlnet_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's weights (what it holds wherever it sits)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


class ControlNetStore:
    """The loaded ControlNets by type, least recently used first; loads on first use, releases beyond the budget."""

    def __init__(self, source: Callable[[str], str], on_status: Callable[[str | None], None] = lambda text: None):
        self._source = source  # type -> local folder or Hub repo id
        self._on_status = on_status
        self._models: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def loaded(self) -> list[str]:
        """The types in memory, least recently used first."""
        return list(self._models)

    def sizes(self) -> dict[str, int]:
        """Bytes held by each loaded ControlNet (what memory.py plans with)."""
        return {kind: controlnet_bytes(model) for kind, model in self._models.items()}

    def get(self, kinds: tuple[str, ...], dtype: torch.dtype, device: str | None,
            budget_bytes: int | None = None) -> list:
        """The models for these types, loading what is missing and releasing others beyond the budget."""
        with self._lock:
            for kind in kinds:
                if kind not in self._models:
                    self._models[kind] = self._load(kind, dtype, device)
                self._models.move_to_end(kind)
            self._release(keep=set(kinds), budget_bytes=budget_bytes)
            return [self._models[kind] for kind in kinds]

    def _load(self, kind: str, dtype: torch.dtype, device: str | None):
        folder = self._source(kind)
        if downloads.is_hub_repo(folder):
            folder = str(downloads.fetch_files(folder, PATTERNS["controlnet"], on_progress=self._progress(folder)))
        # Imported here: it imports diffusers, which the engine's import must not pay for.
        from kolors_app.control.kolors_controlnet import load_controlnet

        self._on_status(f"loading ControlNet {kind}")
        model = load_controlnet(folder, dtype)
        if device is not None:
            model.to(device)
        self.loads += 1
        self._on_status(None)
        log.info("loaded ControlNet %s from %s (%.2f GB)", kind, folder, controlnet_bytes(model) / 1e9)
        return model

    def _progress(self, repo: str):
        def on_progress(done: int, total: int) -> None:
            percent = f" ({100 * done // total}%)" if total else ""
            self._on_status(f"downloading {repo}: {done / 1e9:.1f} of {total / 1e9:.1f} GB{percent}")

        return on_progress

    def _release(self, keep: set[str], budget_bytes: int | None) -> None:
        """Drop the least recently used models not in `keep` while over the budget (or over DEFAULT_KEPT)."""
        def over() -> bool:
            if budget_bytes is None:
                return len(self._models) > DEFAULT_KEPT
            return sum(self.sizes().values()) > budget_bytes

        for kind in list(self._models):
            if not over():
                break
            if kind not in keep:
                log.info("releasing ControlNet %s (over the memory budget)", kind)
                del self._models[kind]

    def clear(self) -> None:
        """Forget every loaded model."""
        with self._lock:
            self._models.clear()


__all__ = ["ControlNetStore", "controlnet_bytes"]
