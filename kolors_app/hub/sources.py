"""Where each weight repo is loaded from: its Hub repo id, or a local folder that stands in for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from kolors_app.core.config import Settings

# The `--model` value of the offline random-weight model; the launcher resolves it into local folders.
TINY_MODEL = "tiny"


@dataclass(frozen=True)
class WeightSources:
    """The model's and the IP-Adapter's repo id or folder, and the local folders that replace add-on repos."""

    model: str
    ip_adapter: str
    addons: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> WeightSources:
        """The repos or folders the settings name; add-ons come from the Hub."""
        if settings.model == TINY_MODEL:
            raise ValueError("model 'tiny' has no weights of its own: the launcher (kolors_app.launch.build) "
                             "passes the sources of the built tiny model (kolors_app.testing.tiny.tiny_sources)")
        return cls(settings.model, settings.ip_adapter)

    @classmethod
    def in_folder(cls, folder: Path, model: str, ip_adapter: str, addons: Iterable[str]) -> WeightSources:
        """Every repo from folder/<repo id>, the layout of a mirrored Hub (and of the tiny model's build)."""
        return cls(str(folder / model), str(folder / ip_adapter), {repo: str(folder / repo) for repo in addons})

    def addon(self, repo: str) -> str:
        """A Control add-on's repo id, or the local folder that replaces it."""
        return self.addons.get(repo, repo)
