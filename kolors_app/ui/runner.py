"""Run a request for a visitor: progress bar, live previews, Stop, and results the gallery can show."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import html
import itertools
import logging
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import anyio
import gradio as gr

from kolors_app.core.config import Settings, on_spaces
from kolors_app.core.request import GenerationRequest, GenerationResult
from kolors_app.core.errors import ValidationError
from kolors_app.engine.engine import Engine, JobHandle, QueueFull
from kolors_app.engine.executors import LocalExecutor
from kolors_app.engine.jobs import GENERATE, GRADIO_API, LOCAL_OWNER, PAGE, PYTHON, Job, JobOutcome, Owner
from kolors_app.hub.downloads import ModelUnavailable
from kolors_app.media import png_encoder
from kolors_app.models.memory import OutOfGPUMemory
from kolors_app.models.pipeline_manager import PipelineManager
from kolors_app.outputs.history import OutputStore
from kolors_app.outputs.result_files import BackgroundSaver, encode_png, write_served_png
from kolors_app.serving.addresses import client_address
from kolors_app.serving.owners import mcp_owner
from kolors_app.serving.quotas import engine_limits, resolve
from kolors_app.ui.i18n import refusal_text, tr

# The creative accordion's values of the event being handled (styles, hires fix): ui/creative.py sets it around
# a tab's handler, so that the tabs' own request building stays as it is.
CREATIVE_PART: contextvars.ContextVar[dict | None] = contextvars.ContextVar("creative_part", default=None)


def add_creative_part(request: GenerationRequest) -> GenerationRequest:
    """The request with the accordion's styles and hires fix, where the request has none of its own."""
    part = CREATIVE_PART.get()
    if not part:
        return request
    return dataclasses.replace(request, styles=request.styles or part.get("styles") or [],
                               hires=request.hires if request.hires is not None else part.get("hires"))


log = logging.getLogger(__name__)
# The page gets progress at most every UPDATE_SECONDS and a preview at most every PREVIEW_SECONDS: decided by the
# clock, so that a fast GPU run is not slowed by messages (bench/README.md measures their cost).
UPDATE_SECONDS = 0.2
PREVIEW_SECONDS = 1.0
# The page: a preview at most once a second (each costs gradio an update of every output; bench/api.py).
PAGE_PREVIEW_SECONDS = 1.0
# Download names: a number and the seed, then a few words of the prompt.
SLUG_CHARS = 32
_numbers = itertools.count(1)


@dataclass
class AppContext:
    """The core objects the UI works with, built once by app.py (or by a test)."""

    settings: Settings
    manager: PipelineManager
    outputs: OutputStore | None = None
    update_seconds: float = UPDATE_SECONDS
    preview_seconds: float = PREVIEW_SECONDS
    saver: BackgroundSaver | None = None
    engine: Engine | None = None

    def __post_init__(self):
        if self.outputs is None and self.settings.saving_enabled():
            self.outputs = OutputStore(self.settings.outputs_dir, resolve(self.settings).outputs_free_bytes)
        if self.saver is None and self.outputs is not None:
            self.saver = BackgroundSaver(self.outputs)
        if self.engine is None:
            self.engine = Engine(self.manager, LocalExecutor(self.manager), engine_limits(self.settings))

    @property
    def trust_forwarded(self) -> bool:
        return resolve(self.settings).trust_forwarded

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run one request through the engine as the local user (Python callers; entrances use their own owner)."""
        outcome = self.engine.submit(Job(GENERATE, LOCAL_OWNER, PYTHON, [request]), follow=False).result()
        return outcome.results[0] if outcome.results else GenerationResult([], request, stopped=True)


def session_of(request: gr.Request | None) -> str:
    """The visitor's session id (direct handler calls in tests have none)."""
    return getattr(request, "session_hash", None) or "local"


def owner_of(ctx: AppContext, request: gr.Request | None) -> Owner:
    """The job owner of a gradio event: the visitor's session (an MCP call: its MCP session), with its address."""
    scope = getattr(getattr(request, "request", None), "scope", None) or {}
    return mcp_owner(scope) or Owner("session", session_of(request), client_address(scope, ctx.trust_forwarded))


def submit(ctx: AppContext, job: Job, http: gr.Request | None, follow: bool = True) -> JobHandle:
    """The job submitted to the engine; a refusal shown to the visitor as the engine gave it."""
    try:
        return ctx.engine.submit(job, follow)
    except ValidationError as error:
        raise gr.Error(as_text(refusal_text(http, error)), title=tr(http, "title_invalid_input")) from None
    except QueueFull as error:
        raise gr.Error(as_text(str(error)), title=tr(http, "title_error")) from None


def first_result(handle: JobHandle, outcome: JobOutcome) -> GenerationResult:
    """The generation's result; a job stopped before it started has none of its own."""
    return outcome.results[0] if outcome.results else GenerationResult([], handle.job.requests[0], stopped=True)


def as_text(message: str) -> str:
    """A message for gr.Error, gr.Warning or gr.Info that shows as text.

    Gradio renders those messages as (sanitised) HTML, and ours quote values from visitors and from the PNG
    and history files they are given: markup there must not become links or forms in someone's page.
    """
    return html.escape(message, quote=False)


def public_message(error: Exception, settings: Settings, http: gr.Request | str | None = "en") -> str:
    """What a visitor may see of an error: never a traceback, and local paths only on a local app."""
    if isinstance(error, ModelUnavailable) and not (settings.share or on_spaces()):
        return str(error)  # the local user is the operator: they need the actionable text
    if isinstance(error, ModelUnavailable):
        return tr(http, "unavailable")
    if isinstance(error, OutOfGPUMemory):
        return tr(http, "oom")
    return tr(http, "failed", name=type(error).__name__)


@dataclass
class Frame:
    """One moment of a run as the visitor sees it."""

    kind: str  # "wait", "progress", "preview" or "done"
    step: int = 0
    total: int = 0
    elapsed: float = 0.0
    rate: float = 0.0  # steps a second
    image: object = None
    result: GenerationResult | None = None

    def eta(self) -> float:
        return (self.total - self.step) / self.rate if self.rate > 0 else 0.0


def clock(seconds: float) -> str:
    """00:12, or 1:02:03 for long runs (A1111's ETA format)."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:" if hours else "") + f"{rest // 60:02d}:{rest % 60:02d}"


def progress_line(lang: str, frame: Frame, loaded: bool = True) -> str:
    """'Sampling step 12/30 · 00:03 · 4.10 it/s · ETA 00:04' (or waiting/loading before the first step)."""
    if frame.step == 0:
        return tr(lang, "waiting" if loaded else "loading")
    return tr(lang, "progress", step=frame.step, total=frame.total, elapsed=clock(frame.elapsed),
              rate=f"{frame.rate:.2f}", eta=clock(frame.eta()))


def run_frames(ctx: AppContext, request: GenerationRequest, http: gr.Request | None,
               progress: gr.Progress | None) -> Iterator[Frame]:
    """Submit to the engine and yield frames: progress every step, previews by time, then done."""
    job = Job(GENERATE, owner_of(ctx, http), PAGE, [add_creative_part(request)],
              preview_seconds=min(ctx.preview_seconds, PAGE_PREVIEW_SECONDS))
    handle = submit(ctx, job, http)
    started = time.perf_counter()
    first_step = None  # (step, time) of the first step seen: the rate leaves out loading and the text encoder
    frame = Frame("wait")
    try:
        yield frame
        for event in handle.events():
            now = time.perf_counter()
            if event.kind in ("progress", "preview"):
                if first_step is None:
                    first_step = (event.step, now)
                rate = (event.step - first_step[0]) / (now - first_step[1]) if now > first_step[1] else frame.rate
                if event.kind == "progress":
                    frame = Frame("progress", event.step, event.total, now - started, rate, frame.image)
                    if progress is not None:
                        progress((event.step, event.total), desc="Step", unit="steps")
                    # Back to gradio after every step: a cancelled run (an API client's cancel) can only be
                    # closed at a yield, and closing it stops the job through the finally below.
                    yield frame
                else:  # the worker already decides previews by time
                    frame = Frame("preview", event.step, frame.total, now - started, rate, event.image)
                    yield frame
            elif event.kind == "failed":
                raise_public(ctx, event.error, http)
            elif event.kind in ("done", "stopped"):
                yield Frame("done", frame.step, frame.total, now - started, frame.rate, frame.image,
                            first_result(handle, event.outcome))
                return
    finally:
        # Also when the generator is closed (a cancelled job, a visitor who left): the job ends at its next
        # step instead of holding the model until the last one.
        if not handle.ended:
            handle.stop()


def run_request(ctx: AppContext, request: GenerationRequest, http: gr.Request | None,
                progress: gr.Progress | None) -> Iterator[tuple]:
    """(gallery, result) pairs: previews while the run goes (progress every ctx.update_seconds), then the PNGs."""
    last_update, previews = 0.0, PreviewFiles()
    try:
        for frame in run_frames(ctx, request, http, progress if progress is None else _Throttled(ctx, progress)):
            if frame.kind == "done":
                yield finish(ctx, frame.result, "en", frame)
            elif frame.kind == "preview":
                yield [(previews.file(frame.image), f"preview, step {frame.step}")], gr.skip()
            elif time.monotonic() - last_update >= ctx.update_seconds:
                last_update = time.monotonic()
                yield gr.skip(), gr.skip()
    finally:
        previews.remove()


class _Throttled:
    """gr.Progress called at most every ctx.update_seconds."""

    def __init__(self, ctx: AppContext, progress):
        self.ctx, self.progress, self.last = ctx, progress, 0.0

    def __call__(self, *args, **kwargs):
        now = time.monotonic()
        if now - self.last >= self.ctx.update_seconds:
            self.last = now
            self.progress(*args, **kwargs)


def raise_public(ctx: AppContext, error: Exception, http: gr.Request | None = None):
    """Log the full error for the operator, show the visitor a short one."""
    if isinstance(error, ValidationError):
        raise gr.Error(as_text(str(error)), title=tr(http, "title_invalid_input")) from None
    # Logged as text, then the traceback dropped: its frames hold the failed run's tensors, which
    # release_memory can only give back once nothing refers to them.
    log.error("generation failed\n%s", "".join(traceback.format_exception(error)).rstrip())
    error.__traceback__ = None
    ctx.manager.release_memory()
    raise gr.Error(as_text(public_message(error, ctx.settings, http)), title=tr(http, "title_error"),
                   print_exception=False) from None


def finish(ctx: AppContext, result: GenerationResult, lang: str = "en", last: Frame | None = None) -> tuple:
    """Gallery items and the JSON result of a finished (or stopped) run.

    A stopped run keeps what it had: its last preview, captioned with the step it stopped at.
    """
    tell(result, lang, last)
    gallery, summary = result_files(ctx, result, lang)
    if result.stopped:
        step = last.step if last is not None else 0
        summary["stopped_at_step"] = step
        if last is not None and last.image is not None:
            gallery = [(last.image, tr(lang, "caption_stopped", step=step, total=last.total))]
    return gallery, summary


def tell(result: GenerationResult, lang: str = "en", last: Frame | None = None) -> None:
    """Show a run's notes to the visitor (gradio's toasts; an API client gets them as log messages)."""
    if result.stopped:
        if last is not None and last.step:
            gr.Info(tr(lang, "stopped", step=last.step, total=last.total), title=tr(lang, "title_info"))
        else:
            gr.Info(tr(lang, "stopped_early"), title=tr(lang, "title_info"))
    for warning in result.warnings:
        gr.Warning(as_text(warning), title=tr(lang, "title_warning"))


def slug(prompt: str) -> str:
    """A few words of the prompt for a file name: letters and digits joined by '-', at most SLUG_CHARS."""
    words = re.findall(r"\w+", prompt.casefold())
    text = ""
    for word in words:
        candidate = f"{text}-{word}" if text else word
        if len(candidate) > SLUG_CHARS:
            break
        text = candidate
    return text or (words[0][:SLUG_CHARS] if words else "")


def download_name(number: int, parameters: dict) -> str:
    """'00012-1234-red-fox.png': a number and the seed, as in the outputs folder, then a prompt slug."""
    seed = parameters.get("seed")
    parts = [f"{number:05d}"] + ([str(seed)] if isinstance(seed, int) and not isinstance(seed, bool) else [])
    words = slug(str(parameters.get("prompt", "")))
    return "-".join(parts + ([words] if words else [])) + ".png"


class PreviewFiles:
    """A run's live previews as PNGs in the served folder, encoded by png_encoder (gradio's own encoding of a PIL
    image at its default level cost ~25 ms a preview; bench/README.md). Removed when the run ends: the final
    images (or, for a stopped run, its last preview encoded anew) take their place, so they do not pile up."""

    def __init__(self):
        self.paths: list[Path] = []

    def file(self, image) -> str:
        path = write_served_png(png_encoder.encode_png(image), gr.utils.get_upload_folder(), "preview.png")
        self.paths.append(Path(path))
        return path

    def remove(self) -> None:
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
                path.parent.rmdir()  # its hash-named folder; left where something else is in it
        self.paths.clear()


def map_png(image) -> bytes:
    """A control map as a plain PNG (no parameters: it is an input, not a result)."""
    return png_encoder.encode_png(image)


def result_files(ctx: AppContext, result: GenerationResult, lang: str = "en") -> tuple:
    """Gallery items (PNG files, each encoded once) and the JSON result; the outputs copy is queued, not waited for."""
    if result.stopped:
        return [], {"images": [], "stopped": True, "warnings": result.warnings}
    gallery, warnings = [], list(result.warnings)
    # A full disk costs nobody their images: they are served from gradio's cache, only the copy is skipped.
    saving = ctx.saver is not None and ctx.outputs.has_room()
    if ctx.saver is not None and not saving:
        warnings.append("The server's disk is full: these images were not saved on the server. Download them now.")
        gr.Warning(warnings[-1])
    folder = gr.utils.get_upload_folder()
    for item in result.images:
        data = encode_png(item.image, item.parameters)
        # A file already in gradio's cache folder is served as it is: gradio neither encodes nor copies it again.
        name = download_name(next(_numbers), item.parameters)
        gallery.append((write_served_png(data, folder, name), tr(lang, "caption_seed", seed=item.seed)))
        if saving:
            ctx.saver.save(item.parameters, data)
    # The maps the control units were given come after the images, to see, download or feed back as a map.
    for index, (made, unit) in enumerate(zip(result.control_maps, result.request.controls)):
        path = write_served_png(map_png(made), folder, f"control-map-{index + 1}-{unit.type}.png")
        gallery.append((path, tr(lang, "caption_control_map", index=index + 1, type=unit.type)))
    summary = {"images": [item.parameters for item in result.images], "warnings": warnings,
               "seconds": round(result.seconds, 3)}
    return gallery, summary


async def run_for_program(ctx: AppContext, request: GenerationRequest, http: gr.Request | None) -> tuple:
    """(gallery, result) of a finished run for an API client: no per-step messages, cancellable at any time.

    When gradio cancels this call (the client's cancel, or a client that went away), the finally below stops
    the job at its next step.
    """
    handle = submit(ctx, Job(GENERATE, owner_of(ctx, http), GRADIO_API, [add_creative_part(request)]), http,
                    follow=False)
    try:
        outcome = await anyio.to_thread.run_sync(handle.result, abandon_on_cancel=True)
        result = first_result(handle, outcome)
        answer = await anyio.to_thread.run_sync(result_files, ctx, result)
    except Exception as error:  # reported to the caller as a short message; CancelledError passes through
        raise_public(ctx, error, http)
    finally:
        if not handle.ended:
            handle.stop()
    tell(result)
    return answer
