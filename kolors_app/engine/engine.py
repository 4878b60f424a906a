"""The job engine: the one door every entrance submits to. Validate once, cost once, apply the owner's quota,
run on the executor, and hand back the job's events and results; only its owner follows or stops it."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator

from kolors_app.core.errors import ValidationError
from kolors_app.core.validation import validate
from kolors_app.creative.upscalers import check_factor
from kolors_app.creative.part import check_loras, tools_for
from kolors_app.engine.cost import Budget, Cost, check_budget, gpu_seconds, job_cost
from kolors_app.engine.executors import Executor, Running
from kolors_app.engine.jobs import GENERATE, GRADIO_QUEUED, KINDS, UPSCALE, Job, JobEvent, JobOutcome, Owner
from kolors_app.models.pipeline_manager import PipelineManager

ENDINGS = ("done", "stopped", "failed")


class QueueFull(Exception):
    """More jobs wait than the server's queue or the owner's quota allows."""


@dataclass(frozen=True)
class EngineLimits:
    """The budget of one job, and how many jobs may wait or run: in all, per owner, per client address."""

    budget: Budget
    queue_size: int = 64
    per_owner: int = 4
    per_address: int = 0  # 0: no limit


@dataclass
class JobHandle:
    """The engine's record of one job: its state for progress routes, and its events for the entrance."""

    job: Job
    cost: Cost
    state: str = "queued"
    step: int = 0
    total: int = 0
    index: int = 0
    count: int = 1
    preview: object = None
    interrupted: bool = False
    skipped: bool = False
    submitted: float = field(default_factory=time.monotonic)
    timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    running: Running | None = None
    outcome: JobOutcome | None = None  # once done or stopped
    error: BaseException | None = None  # once failed
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)
    _events: queue.Queue = field(default_factory=queue.Queue, repr=False)
    _stop_early: bool = False
    followed: bool = True  # someone reads events(); else only the endings are kept (no pile of previews)

    @property
    def owner(self) -> Owner:
        return self.job.owner

    @property
    def ended(self) -> bool:
        return self.state in ENDINGS

    def events(self, timeout: float | None = None) -> Iterator[JobEvent]:
        """The job's events as they come, ending with done, stopped or failed (queue.Empty after `timeout`)."""
        while True:
            event = self._events.get(timeout=timeout)
            yield event
            if event.kind in ENDINGS:
                return

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the end; whether it came."""
        return self._ended.wait(timeout)

    def result(self, timeout: float | None = None) -> JobOutcome:
        """Wait for the end: the outcome, or the failure raised (whether or not someone follows the events)."""
        if not self._ended.wait(timeout):
            raise TimeoutError(f"job {self.job.id} still runs after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.outcome

    def stop(self) -> None:
        """End the job at its next step (before it starts, it never starts)."""
        self.interrupted = True
        if self.running is not None:
            self.running.stop()
        else:
            self._stop_early = True

    def skip(self) -> None:
        self.skipped = True
        if self.running is not None:
            self.running.skip()

    def progress(self) -> float:
        """Done fraction of the whole job, 0..1."""
        if not self.total or not self.count:
            return 0.0
        return min(1.0, (self.index + self.step / self.total) / self.count)

    def _receive(self, event: JobEvent) -> None:
        if event.kind == "started":
            self.state = "running"
        elif event.kind == "progress":
            if event.index != self.index:
                self.skipped = False  # a skip ends one iteration; the next one runs
            self.step, self.total, self.index, self.count = event.step, event.total, event.index, event.count
        elif event.kind == "preview":
            self.preview = event.image
        elif event.kind in ENDINGS:
            self.state, self.outcome, self.error = event.kind, event.outcome, event.error
        if self.followed or event.kind in ENDINGS:
            self._events.put(event)
        if event.kind in ENDINGS:
            self._ended.set()


class Engine:
    """Jobs from every entrance, run one executor; `waiting_elsewhere` counts jobs queued outside (gradio's)."""

    MAX_PENDING_OWNERS = 10_000
    MAX_PENDING = 4

    def __init__(self, manager: PipelineManager, executor: Executor, limits: EngineLimits,
                 waiting_elsewhere: Callable[[], int] = lambda: 0):
        self.manager = manager
        self.executor = executor
        self.limits = limits
        self.waiting_elsewhere = waiting_elsewhere
        self._jobs: list[JobHandle] = []
        self._lock = threading.Lock()
        # Stops asked for before a job reached the engine (the page's Stop while its click waits in gradio's queue).
        self._pending: OrderedDict[str, list[threading.Event]] = OrderedDict()

    # --- submitting ---

    def submit(self, job: Job, follow: bool = True) -> JobHandle:
        """Validate, cost and queue a job; ValidationError or QueueFull before any model work.

        `follow`: the caller reads the job's events (else it waits with result() and reads the handle's state).
        """
        if job.kind not in KINDS:
            raise ValidationError("kind", f"must be one of {', '.join(KINDS)}; got {job.kind!r}")
        job = self._validated(job)
        cost = job_cost(job)
        check_budget(cost, self.limits.budget)
        handle = JobHandle(job, cost, count=max(1, len(job.requests)), followed=follow)
        early = self._take_pending(job.owner)
        with self._lock:
            self._admit(job.owner, bounded=job.entrance not in GRADIO_QUEUED)
            self._jobs.append(handle)
        if early is not None and early.is_set():
            handle._stop_early = True

        def emit(event: JobEvent) -> None:
            handle._receive(event)
            if event.kind in ENDINGS:
                with self._lock:
                    if handle in self._jobs:
                        self._jobs.remove(handle)

        handle._receive(JobEvent("queued"))
        handle.running = self.executor.start(job, gpu_seconds(cost), emit)
        if handle._stop_early:
            handle.running.stop()
        return handle

    def _validated(self, job: Job) -> Job:
        limits = self.manager.settings.limits
        if job.kind == UPSCALE:
            spec = job.upscale
            if spec.image is None:
                raise ValidationError("image", "an image is required", code="required")
            if spec.image.width * spec.image.height > limits.max_image_pixels:
                raise ValidationError("image", f"is {spec.image.width}x{spec.image.height}; at most "
                                               f"{limits.max_image_pixels:,} pixels", code="too_large",
                                      allowed={"max_pixels": limits.max_image_pixels})
            tools_for(self.manager).upscalers.check(spec.upscaler, "upscaler", latent=False)
            spec = dataclasses.replace(spec, factor=check_factor(spec.factor))
            return dataclasses.replace(job, upscale=spec)
        if not job.requests:
            raise ValidationError("requests", "a job needs at least one request", code="required")
        if job.kind == GENERATE and len(job.requests) > limits.max_images:
            raise ValidationError("n_iter", f"at most {limits.max_images} iterations, got {len(job.requests)}",
                                  code="out_of_range", allowed={"min": 1, "max": limits.max_images})
        requests = [validate(request, limits) for request in job.requests]
        for request in requests:
            check_loras(self.manager, request)  # names only; the worker fetches Hub LoRAs before the GPU slot
        return dataclasses.replace(job, requests=requests)

    def _admit(self, owner: Owner, bounded: bool) -> None:
        """Refuse a job past the queue bound or the owner's (or its address's) quota; called under the lock.

        `bounded`: the job did not come through gradio's queue, whose own bound already counted it.
        """
        limits = self.limits
        if bounded and len(self._jobs) + self.waiting_elsewhere() >= limits.queue_size:
            raise QueueFull("Queue is full; try again later")
        mine = sum(1 for handle in self._jobs if handle.owner.key == owner.key)
        if mine >= limits.per_owner:
            raise QueueFull(f"You already have {mine} job(s) waiting or running; at most {limits.per_owner} at a "
                            "time. Wait for one to finish.")
        if limits.per_address and sum(1 for h in self._jobs if h.owner.address == owner.address) >= limits.per_address:
            raise QueueFull(f"Your address already has {limits.per_address} job(s) waiting or running; wait for "
                            "one to finish.")

    # --- owners ---

    def jobs_of(self, owner: Owner) -> list[JobHandle]:
        """The owner's jobs waiting or running, oldest first."""
        with self._lock:
            return [handle for handle in self._jobs if handle.owner.key == owner.key]

    def current(self, owner: Owner) -> JobHandle | None:
        """The owner's running job, else its oldest waiting one."""
        jobs = self.jobs_of(owner)
        return next((handle for handle in jobs if handle.state == "running"), jobs[0] if jobs else None)

    def stop(self, owner: Owner) -> None:
        """Stop every job of this owner, and the ones it clicked that have not reached the engine yet."""
        with self._lock:
            for flag in self._pending.get(owner.key, []):
                flag.set()
        for handle in self.jobs_of(owner):
            handle.stop()

    def skip(self, owner: Owner) -> None:
        handle = self.current(owner)
        if handle is not None:
            handle.skip()

    def expect(self, owner: Owner) -> None:
        """A job of this owner is on its way (clicked, waiting in gradio's queue): a stop from now on reaches it."""
        with self._lock:
            waiting = self._pending.setdefault(owner.key, [])
            self._pending.move_to_end(owner.key)
            waiting.append(threading.Event())
            del waiting[:-self.MAX_PENDING]
            while len(self._pending) > self.MAX_PENDING_OWNERS:
                self._pending.popitem(last=False)

    def _take_pending(self, owner: Owner) -> threading.Event | None:
        with self._lock:
            waiting = self._pending.get(owner.key)
            if not waiting:
                return None
            flag = waiting.pop(0)
            if not waiting:
                del self._pending[owner.key]
            return flag

    def queued(self) -> int:
        """Jobs waiting or running."""
        with self._lock:
            return len(self._jobs)
