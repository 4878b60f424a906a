"""Run a request for a visitor: progress bar, live previews, Stop, and results the gallery can show."""

from __future__ import annotations

import html
import json
import logging
import queue
import threading
import traceback
from dataclasses import dataclass, field
from typing import Iterator

import gradio as gr

from ..config import Settings, on_spaces
from ..downloads import ModelUnavailable
from ..generation import RunControl, generate
from ..history import OutputStore
from ..memory import OutOfGPUMemory
from ..metadata import JSON_KEY, PARAMETERS_KEY, format_parameters
from ..params import GenerationResult, GenerationRequest, ValidationError, validate
from ..pipelines import PipelineManager
from ..zerogpu import gpu_decorator, on_zero_gpu

log = logging.getLogger(__name__)
PREVIEWS_PER_RUN = 5


class RunRegistry:
    """Stop flags of the runs in flight, keyed by gradio's session hash; holds no visitor data."""

    def __init__(self):
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, session: str) -> threading.Event:
        """A fresh flag for a new run of this session."""
        with self._lock:
            self._flags[session] = threading.Event()
            return self._flags[session]

    def stop(self, session: str) -> None:
        """Ask this session's run to stop at the end of its current step."""
        with self._lock:
            flag = self._flags.get(session)
        if flag is not None:
            flag.set()

    def finish(self, session: str, flag: threading.Event) -> None:
        """Forget a finished run's flag (unless a newer run replaced it)."""
        with self._lock:
            if self._flags.get(session) is flag:
                del self._flags[session]


@dataclass
class AppContext:
    """The core objects the UI works with, built once by app.py (or by a test)."""

    settings: Settings
    manager: PipelineManager
    runs: RunRegistry = field(default_factory=RunRegistry)
    outputs: OutputStore | None = None

    def generate(self, request: GenerationRequest, control: RunControl) -> GenerationResult:
        """Run one request; on ZeroGPU inside the GPU slice, where callbacks cannot reach (no previews, no stop)."""
        if on_zero_gpu():
            return _generate_on_zero_gpu(self.manager, request)
        return generate(self.manager, request, control)

    def __post_init__(self):
        if self.outputs is None and self.settings.saving_enabled():
            self.outputs = OutputStore(self.settings.outputs_dir)


@gpu_decorator()
def _generate_on_zero_gpu(manager: PipelineManager, request: GenerationRequest) -> GenerationResult:
    return generate(manager, request)


def session_of(request: gr.Request | None) -> str:
    """The visitor's session id (direct handler calls in tests have none)."""
    return getattr(request, "session_hash", None) or "local"


def as_text(message: str) -> str:
    """A message for gr.Error, gr.Warning or gr.Info that shows as text.

    Gradio renders those messages as (sanitised) HTML, and ours quote values from visitors and from the PNG
    and history files they are given: markup there must not become links or forms in someone's page.
    """
    return html.escape(message, quote=False)


def public_message(error: Exception, settings: Settings) -> str:
    """What a visitor may see of an error: never a traceback, and local paths only on a local app."""
    if isinstance(error, ModelUnavailable) and not (settings.share or on_spaces()):
        return str(error)  # the local user is the operator: they need the actionable text
    if isinstance(error, ModelUnavailable):
        return "The model is not available on this server yet; its operator finds the details in the server log."
    if isinstance(error, OutOfGPUMemory):
        return "Out of GPU memory, even with the smallest memory plan: try a smaller size or fewer images."
    return f"Generation failed ({type(error).__name__}). The server is still running; please try again."


def run_request(ctx: AppContext, request: GenerationRequest, http: gr.Request | None,
                progress: gr.Progress | None) -> Iterator[tuple]:
    """Yield (gallery, result) pairs: live previews while the run goes, then the final PNGs."""
    try:
        request = validate(request, ctx.settings.limits)
    except ValidationError as error:
        raise gr.Error(as_text(str(error)), title="Invalid input") from None
    session = session_of(http)
    events: queue.Queue = queue.Queue()
    stop = ctx.runs.start(session)
    control = RunControl(
        on_progress=lambda step, total: events.put(("progress", step, total)),
        on_preview=lambda step, image: events.put(("preview", step, image)),
        preview_every=max(1, request.num_inference_steps // PREVIEWS_PER_RUN),
        stop=stop,
    )

    def work():
        try:
            events.put(("done", ctx.generate(request, control)))
        except Exception as error:  # reported to the visitor below; the worker thread must not die silently
            events.put(("error", error))

    threading.Thread(target=work, daemon=True, name=f"generate-{session[:8]}").start()
    try:
        while True:
            kind, *payload = events.get()
            if kind == "progress":
                if progress is not None:
                    progress((payload[0], payload[1]), desc="Step", unit="steps")
                # Back to gradio after every step: a cancelled run (an API client's cancel) can only be
                # closed at a yield, and closing it stops the worker through the finally below.
                yield gr.skip(), gr.skip()
            elif kind == "preview":
                yield [(payload[1], f"preview, step {payload[0]}")], gr.skip()
            elif kind == "error":
                raise_public(ctx, payload[0])
            elif kind == "done":
                yield finish(ctx, payload[0])
                return
    finally:
        # Also when the generator is closed (a cancelled job): the worker thread ends the run at its next
        # step instead of holding the model until the last one.
        stop.set()
        ctx.runs.finish(session, stop)


def raise_public(ctx: AppContext, error: Exception):
    """Log the full error for the operator, show the visitor a short one."""
    if isinstance(error, ValidationError):
        raise gr.Error(as_text(str(error)), title="Invalid input") from None
    # Logged as text, then the traceback dropped: its frames hold the failed run's tensors, which
    # release_memory can only give back once nothing refers to them.
    log.error("generation failed\n%s", "".join(traceback.format_exception(error)).rstrip())
    error.__traceback__ = None
    ctx.manager.release_memory()
    raise gr.Error(as_text(public_message(error, ctx.settings)), print_exception=False) from None


def with_metadata(image, parameters: dict):
    """A copy carrying the parameters as PNG text, which gradio writes into the gallery's PNG files."""
    tagged = image.copy()
    tagged.info[PARAMETERS_KEY] = format_parameters(parameters)
    tagged.info[JSON_KEY] = json.dumps(parameters, ensure_ascii=False)
    return tagged


def finish(ctx: AppContext, result: GenerationResult) -> tuple:
    """Gallery items and the JSON result of a finished (or stopped) run."""
    if result.stopped:
        gr.Info("Stopped.")
        return [], {"images": [], "stopped": True, "warnings": result.warnings}
    for warning in result.warnings:
        gr.Warning(as_text(warning))
    gallery = []
    for item in result.images:
        image = with_metadata(item.image, item.parameters)
        gallery.append((image, f"seed {item.seed}"))
        if ctx.outputs is not None:
            ctx.outputs.save(item.image, item.parameters)
    # The maps the control units were given come after the images, to see, download or feed back as a map.
    gallery += [(made, f"control map {index + 1} ({unit.type})")
                for index, (made, unit) in enumerate(zip(result.control_maps, result.request.controls))]
    summary = {"images": [item.parameters for item in result.images], "warnings": result.warnings,
               "seconds": round(result.seconds, 3)}
    return gallery, summary
