"""A job and what it says while it runs: plain data that can cross to a worker in another process."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from kolors_app.core.request import GenerationRequest, GenerationResult
from kolors_app.creative.xyz import Axis, Cell

GENERATE, PLOT, UPSCALE = "generate", "plot", "upscale"
KINDS = (GENERATE, PLOT, UPSCALE)
# Entrances. Those behind gradio's queue are bounded by it; the others by the engine's own queue bound.
PAGE, GRADIO_API, MCP, REST, A1111, OPENAI, PYTHON = "page", "gradio_api", "mcp", "rest", "a1111", "openai", "python"
GRADIO_QUEUED = (PAGE, GRADIO_API, MCP)
_ids = itertools.count(1)


@dataclass(frozen=True)
class Owner:
    """Who a job belongs to: only this owner follows its progress and previews, or stops it.

    `kind`: "session" (a page visitor), "user" (an authenticated API user), "key" (an OpenAI client, by its key's
    place in --api-key, never the key), "address" (an API client without credentials) or "mcp" (an MCP session).
    `address` is the client address the quotas count.
    """

    kind: str
    id: str
    address: str = "unknown"

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


LOCAL_OWNER = Owner("user", "local", "local")  # Python callers of this process


@dataclass
class PlotSpec:
    """An X/Y/Z plot: its cells (place and flat parameters; the job's requests are theirs, in order) and axes."""

    cells: list[Cell]
    axes: list[Axis | None]


@dataclass
class UpscaleSpec:
    """The Upscale action: one image made `factor` times larger by `upscaler`."""

    image: Image.Image = field(repr=False)
    upscaler: str = "Lanczos"
    factor: float = 2.0


@dataclass
class Job:
    """One unit of work from one entrance: what to do, for whom, and where it came from.

    `requests`: a generation's iterations (A1111's n_iter; one for every other entrance), each run in turn.
    """

    kind: str
    owner: Owner
    entrance: str
    requests: list[GenerationRequest] = field(default_factory=list)
    plot: PlotSpec | None = None
    upscale: UpscaleSpec | None = None
    preview_seconds: float | None = None  # None: no previews (program entrances that do not show them)
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def steps(self) -> int:
        """Denoising steps of one iteration (for progress lines)."""
        return self.requests[0].num_inference_steps if self.requests else 0


@dataclass
class JobEvent:
    """What a running job says: queued, started, progress, preview, warning, then done, stopped or failed.

    progress: `step` of `total` in iteration (or plot cell) `index` of `count`. preview: a small image.
    done/stopped: `outcome`. failed: `error` (the exception, for the entrance to show in its own way).
    """

    kind: str
    step: int = 0
    total: int = 0
    index: int = 0
    count: int = 1
    image: Image.Image | None = field(default=None, repr=False)
    message: str = ""
    outcome: Any = None
    error: BaseException | None = None


@dataclass
class JobOutcome:
    """A job's results: a generation's per-iteration results, a plot's cells and grid, or an upscaled image."""

    results: list[GenerationResult] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)  # a plot's finished cells
    grid: Image.Image | None = field(default=None, repr=False)
    image: Image.Image | None = field(default=None, repr=False)
    stopped: bool = False
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def images(self) -> list:
        """Every GeneratedImage of a generation's iterations, in order."""
        return [item for result in self.results for item in result.images]
