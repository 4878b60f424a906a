"""A1111 jobs: one at a time, a bounded wait, progress with a live preview, interrupt and skip."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from PIL import Image

PREVIEW_SECONDS = 1.0


class QueueFull(Exception):
    """More requests wait than --queue-size allows."""


@dataclass
class Job:
    """The A1111 job that holds the slot: where it is, its latest preview, and its stop flags."""

    job_count: int
    steps: int
    started: float = field(default_factory=time.monotonic)
    timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    job_no: int = 0
    step: int = 0
    preview: Image.Image | None = None
    interrupted: bool = False
    skipped: bool = False
    stop: threading.Event = field(default_factory=threading.Event)

    def next_iteration(self) -> threading.Event:
        """A fresh stop flag for the next iteration (a skip ends only the current one)."""
        self.skipped = False
        self.step = 0
        self.stop = threading.Event()
        return self.stop

    def progress(self) -> float:
        """Done fraction of the whole job, 0..1."""
        if not self.steps or not self.job_count:
            return 0.0
        return min(1.0, (self.job_no + self.step / self.steps) / self.job_count)


class JobBoard:
    """Runs A1111 jobs one at a time (the model's own run lock is the GPU slot shared with the UI).

    `waiting_elsewhere` counts the requests in gradio's queue, so that both kinds of caller share
    one `--queue-size`.
    """

    def __init__(self, queue_size: int, waiting_elsewhere: Callable[[], int] = lambda: 0):
        self.queue_size = queue_size
        self.waiting_elsewhere = waiting_elsewhere
        self._slot = threading.Lock()
        self._lock = threading.Lock()
        self._waiting = 0
        self.current: Job | None = None

    def run(self, job: Job, work: Callable[[Job], object]):
        """Wait for the slot (refused at once when the queue is full), then run `work(job)`."""
        with self._lock:
            if self._waiting + self.waiting_elsewhere() >= self.queue_size:
                raise QueueFull("Queue is full; try again later")
            self._waiting += 1
        try:
            with self._slot:
                self.current = job
                try:
                    return work(job)
                finally:
                    self.current = None
        finally:
            with self._lock:
                self._waiting -= 1

    def interrupt(self) -> None:
        """End the running job at its next step; its finished iterations are still answered."""
        job = self.current
        if job is not None:
            job.interrupted = True
            job.stop.set()

    def skip(self) -> None:
        """End the running iteration at its next step and go on with the next one."""
        job = self.current
        if job is not None:
            job.skipped = True
            job.stop.set()
