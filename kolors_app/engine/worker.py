"""The worker: runs one validated job on a pipeline manager and says what happens through `emit`.

It receives plain data (a Job) and two flags, and gives back plain data (JobEvents, a JobOutcome): an executor
can run it in this process (executors.LocalExecutor) or in a replica of its own.
"""

from __future__ import annotations

import threading
from typing import Callable

from kolors_app.creative import xyz
from kolors_app.creative.part import fetch_loras, tools_for
from kolors_app.engine.generation import RunControl, run_validated
from kolors_app.engine.jobs import GENERATE, PLOT, Job, JobEvent, JobOutcome
from kolors_app.models.pipeline_manager import PipelineManager

Emit = Callable[[JobEvent], None]


class StopFlags:
    """Stop (the whole job) and skip (the current iteration only, A1111's skip), checked at every step."""

    def __init__(self):
        self.stopped = False
        self.current = threading.Event()
        self._lock = threading.Lock()

    def next_iteration(self) -> threading.Event | None:
        """A fresh flag for the next iteration; None once the job is stopped."""
        with self._lock:
            if self.stopped:
                return None
            self.current = threading.Event()
            return self.current

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            self.current.set()

    def skip(self) -> None:
        self.current.set()


def fetch_parts(manager: PipelineManager, job: Job) -> None:
    """What the job needs from the network (Hub LoRAs), fetched before it waits for the GPU slot."""
    for request in job.requests:
        fetch_loras(manager, request)


def run_job(manager: PipelineManager, job: Job, emit: Emit, flags: StopFlags) -> JobOutcome:
    """Run every part of the job in order; a stop keeps what is finished."""
    if job.kind == GENERATE:
        return _generate(manager, job, emit, flags)
    if job.kind == PLOT:
        return _plot(manager, job, emit, flags)
    spec = job.upscale
    emit(JobEvent("progress", 0, 1))
    image = tools_for(manager).upscalers.upscale(spec.image, spec.upscaler, spec.factor)
    emit(JobEvent("progress", 1, 1))
    return JobOutcome(image=image)


def _control(job: Job, emit: Emit, stop: threading.Event, index: int, count: int) -> RunControl:
    on_preview = None
    if job.preview_seconds is not None:
        on_preview = lambda step, image: emit(JobEvent("preview", step, index=index, count=count,  # noqa: E731
                                                       image=image))
    return RunControl(on_progress=lambda step, total: emit(JobEvent("progress", step, total, index, count)),
                      on_preview=on_preview, preview_seconds=job.preview_seconds, stop=stop)


def _generate(manager: PipelineManager, job: Job, emit: Emit, flags: StopFlags) -> JobOutcome:
    outcome = JobOutcome()
    count = len(job.requests)
    for index, request in enumerate(job.requests):
        stop = flags.next_iteration()
        if stop is None:
            break
        result = run_validated(manager, request, _control(job, emit, stop, index, count))
        outcome.results.append(result)
        for warning in result.warnings:
            if warning not in outcome.warnings:
                outcome.warnings.append(warning)
                emit(JobEvent("warning", message=warning))
    outcome.interrupted = flags.stopped
    outcome.stopped = flags.stopped and not outcome.images
    return outcome


def _plot(manager: PipelineManager, job: Job, emit: Emit, flags: StopFlags) -> JobOutcome:
    cells, count = job.plot.cells, len(job.requests)
    done = []
    for index, (cell, request) in enumerate(zip(cells, job.requests)):
        stop = flags.next_iteration()
        if stop is None:
            break
        result = run_validated(manager, request, _control(job, emit, stop, index, count))
        if result.stopped:
            break
        cell.image, cell.result_params = result.images[0].image, result.images[0].parameters
        done.append(cell)
    grid = xyz.grid_image(cells, job.plot.axes) if done else None
    return JobOutcome(cells=done, grid=grid, stopped=len(done) < count, interrupted=flags.stopped)
