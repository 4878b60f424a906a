"""Executors: where a job's worker runs. The engine sees only this interface and plain data crossing it.

LocalExecutor is one GPU slot in this process (jobs one at a time, in worker threads). Another executor (Ray
Serve replicas) starts the same worker elsewhere and forwards its events and the stop and skip calls.
"""

from __future__ import annotations

import abc
import logging
import queue
import threading
import traceback
from typing import Callable

from kolors_app.core.zerogpu import gpu_decorator, on_zero_gpu
from kolors_app.engine.jobs import Job, JobEvent, JobOutcome
from kolors_app.core.errors import ValidationError
from kolors_app.engine.worker import StopFlags, fetch_parts, run_job
from kolors_app.models.pipeline_manager import PipelineManager

log = logging.getLogger(__name__)
Emit = Callable[[JobEvent], None]


class Running(abc.ABC):
    """A started job as its executor controls it."""

    @abc.abstractmethod
    def stop(self) -> None:
        """End the job at its next step; finished iterations are kept."""

    @abc.abstractmethod
    def skip(self) -> None:
        """End the current iteration at its next step and go on with the next one."""


class Executor(abc.ABC):
    """Runs jobs; each one's events go to `emit`, ending with exactly one of done, stopped or failed."""

    @abc.abstractmethod
    def start(self, job: Job, gpu_seconds: int, emit: Emit) -> Running:
        """Queue the job; it starts when a slot is free."""

    def close(self) -> None:
        """Release what the executor holds (workers, replicas); by default it holds nothing."""
        return None


class _LocalRun(Running):
    def __init__(self):
        self.flags = StopFlags()

    def stop(self) -> None:
        self.flags.stop()

    def skip(self) -> None:
        self.flags.skip()


class LocalExecutor(Executor):
    """One slot in this process: one long-lived worker thread runs the jobs in the order they came.

    One thread for every job, not a thread each: torch's OpenMP pool belongs to the thread that calls it, and a
    fresh thread made a 2-step 256 px run on the tiny model about 100 ms slower (bench/cost.py).
    """

    def __init__(self, manager: PipelineManager):
        self.manager = manager
        self._jobs: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._slot = threading.Lock()  # held while a job runs (a test holds it to keep the slot busy)

    def start(self, job: Job, gpu_seconds: int, emit: Emit) -> Running:
        run = _LocalRun()
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, daemon=True, name="job-worker")
                self._worker.start()
        # Hub downloads (a LoRA named by its repo) wait in a thread of their own, not in the worker's queue.
        threading.Thread(target=self._fetch_then_queue, args=(job, gpu_seconds, emit, run), daemon=True,
                         name=f"fetch-{job.id}").start()
        return run

    def _fetch_then_queue(self, job: Job, gpu_seconds: int, emit: Emit, run: _LocalRun) -> None:
        try:
            fetch_parts(self.manager, job)
        except Exception as error:  # a refusal (too large, not found, offline) or a fault: the job ends either way
            if isinstance(error, ValidationError):
                log.info("job %s refused: %s", job.id, error)
            else:
                log.error("job %s failed\n%s", job.id, "".join(traceback.format_exception(error)).rstrip())
            emit(JobEvent("failed", error=error))
            return
        self._jobs.put((job, gpu_seconds, emit, run))

    def _serve(self) -> None:
        while True:
            work = self._jobs.get()
            try:
                with self._slot:
                    self._work(*work)
            except Exception:  # an entrance's event handler failed: log it, keep serving the others
                log.exception("a job's event handler failed")

    def _work(self, job: Job, gpu_seconds: int, emit: Emit, run: _LocalRun) -> None:
        if run.flags.stopped:
            emit(JobEvent("stopped", outcome=JobOutcome(stopped=True, interrupted=True)))
            return
        emit(JobEvent("started"))
        try:
            if on_zero_gpu():
                outcome = _run_in_gpu_slice(self.manager, job, gpu_seconds)
            else:
                outcome = run_job(self.manager, job, emit, run.flags)
        except Exception as error:  # the entrance shows it in its own way; the worker must not die silently
            log.error("job %s failed\n%s", job.id, "".join(traceback.format_exception(error)).rstrip())
            error.__traceback__ = None  # its frames hold the failed run's tensors
            self.manager.release_memory()
            emit(JobEvent("failed", error=error))
            return
        emit(JobEvent("stopped" if outcome.stopped else "done", outcome=outcome))


@gpu_decorator(duration=lambda manager, job, seconds: seconds)
def _run_in_gpu_slice(manager: PipelineManager, job: Job, seconds: int) -> JobOutcome:
    """On ZeroGPU the job runs inside one GPU slice of `seconds` (from its cost), where callbacks cannot reach."""
    return run_job(manager, job, lambda event: None, StopFlags())
