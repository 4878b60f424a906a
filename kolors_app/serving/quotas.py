"""What one visitor may take of a shared server: work per request, jobs in the queue, uploads, logins.

Plain functions and small classes, without gradio, so that every front end (the UI, the A1111 API)
applies the same limits. Defaults differ for a local app and a public one (share link, Space).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from kolors_app.core.config import Settings, on_spaces
from kolors_app.core.errors import ValidationError

MEGAPIXEL = 1024 * 1024


@dataclass(frozen=True)
class Quotas:
    """The resolved limits (auto settings replaced by the local or public default)."""

    max_work: float  # megapixels x images x denoising steps of one request
    queue_per_session: int  # jobs waiting or running per browser session
    queue_per_address: int  # ... per client address (0 = no limit)
    sessions: int  # sessions whose state gradio keeps in memory
    max_request_bytes: int  # body of any request but an upload
    upload_quota_bytes: int  # uploaded per client address per hour
    upload_cache_bytes: int  # uploads and results in gradio's cache folder, oldest removed first
    outputs_free_bytes: int  # free disk kept on the outputs folder's disk
    unqueued_per_address: int  # unqueued events running at once per client address
    login_free_attempts: int  # wrong passwords before the back-off starts
    trust_forwarded: bool  # take the client address from X-Forwarded-For (behind a proxy)
    allowed_hosts: tuple[str, ...] | None  # Host names answered; None = any


# (local, public) defaults of every quota setting left at auto (None).
DEFAULTS = {
    "max_work": (2600.0, 300.0),
    "queue_per_session": (4, 1),
    "queue_per_address": (0, 1),
    "sessions": (1000, 200),
    "max_request_mb": (4, 4),
    "upload_quota_mb": (2000, 200),
    "upload_cache_mb": (4096, 2048),
    "outputs_free_mb": (1024, 1024),
    "unqueued_per_address": (8, 4),
    "login_free_attempts": (5, 5),
}
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_public(settings: Settings) -> bool:
    """Reached by strangers: a share link or a Space."""
    return bool(settings.share or on_spaces())


def resolve(settings: Settings) -> Quotas:
    """The quotas for these settings."""
    public = is_public(settings)
    proxied = public if settings.behind_proxy is None else settings.behind_proxy

    def value(name: str):
        given = getattr(settings, name)
        return DEFAULTS[name][public] if given is None else given

    mb = 1024 * 1024
    return Quotas(
        max_work=float(value("max_work")), queue_per_session=value("queue_per_session"),
        queue_per_address=value("queue_per_address"), sessions=value("sessions"),
        max_request_bytes=value("max_request_mb") * mb, upload_quota_bytes=value("upload_quota_mb") * mb,
        upload_cache_bytes=value("upload_cache_mb") * mb, outputs_free_bytes=value("outputs_free_mb") * mb,
        unqueued_per_address=value("unqueued_per_address"), login_free_attempts=value("login_free_attempts"),
        trust_forwarded=proxied, allowed_hosts=allowed_hosts(settings, public or proxied))


def allowed_hosts(settings: Settings, reached_by_name: bool) -> tuple[str, ...] | None:
    """Host names a local app answers to (DNS-rebinding protection); None (any) for a public or proxied one."""
    if settings.allowed_hosts:
        return tuple(name.strip().lower() for name in settings.allowed_hosts.split(",") if name.strip())
    if reached_by_name or settings.host not in ("127.0.0.1", "localhost", "::1"):
        return None  # reached by a name this app cannot know; --allowed-hosts restricts it
    return LOCAL_HOSTS


def work_of(width: int, height: int, num_images: int, steps: int, strength: float | None = None) -> float:
    """Megapixels x images x the denoising steps that actually run (an init image runs steps x strength)."""
    run_steps = max(1, int(steps * strength)) if strength is not None else steps
    return width * height / MEGAPIXEL * num_images * run_steps


def check_work(request, quotas: Quotas | float) -> None:
    """Refuse a validated request whose work is over the budget, naming the fields to lower."""
    budget = quotas.max_work if isinstance(quotas, Quotas) else float(quotas)
    init = getattr(request, "init", None)
    strength = getattr(init, "strength", None) if init is not None else getattr(request, "strength", None)
    if getattr(request, "image", None) is None and init is None:
        strength = None
    work = work_of(request.width, request.height, request.num_images, request.num_inference_steps, strength)
    if work > budget:
        raise ValidationError("num_inference_steps", (
            f"width x height x num_images x steps is {work:,.0f} megapixel-steps; at most {budget:,.0f} allowed "
            "on this server: lower the size, the number of images or the steps"))


class QueueQuota:
    """Counts a visitor's jobs in the queue: per session and per client address."""

    def __init__(self, quotas: Quotas):
        self.quotas = quotas

    def refusal(self, jobs: list[tuple[str, str]], session: str, address: str) -> str | None:
        """The message refusing one more job, or None; `jobs` are (session, address) of jobs waiting or running."""
        per_session = sum(1 for job_session, _ in jobs if job_session == session)
        if per_session >= self.quotas.queue_per_session:
            return (f"You already have {per_session} job(s) in the queue; at most {self.quotas.queue_per_session} "
                    "at a time. Wait for one to finish.")
        limit = self.quotas.queue_per_address
        if limit and sum(1 for _, job_address in jobs if job_address == address) >= limit:
            return f"Your address already has {limit} job(s) in the queue; wait for one to finish."
        return None


class WindowCounter:
    """Amounts per key over a sliding window (upload bytes per address per hour)."""

    def __init__(self, window: float):
        self.window = window
        self._items: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def total(self, key: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        with self._lock:
            items = self._items[key]
            while items and items[0][0] < now - self.window:
                items.popleft()
            return sum(amount for _, amount in items)

    def add(self, key: str, amount: int, now: float | None = None) -> None:
        with self._lock:
            self._items[key].append((time.monotonic() if now is None else now, amount))


class LoginThrottle:
    """Back-off after wrong passwords: free attempts, then waits doubling from 1 s up to 5 minutes."""

    MAX_WAIT = 300.0

    def __init__(self, free_attempts: int):
        self.free_attempts = free_attempts
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait(self, address: str, now: float | None = None) -> float:
        """Seconds this address must wait before its next attempt (0 = may try now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            failures, last = self._failures.get(address, (0, 0.0))
        if failures < self.free_attempts:
            return 0.0
        delay = min(self.MAX_WAIT, 2.0 ** (failures - self.free_attempts))
        return max(0.0, last + delay - now)

    def failed(self, address: str, now: float | None = None) -> None:
        with self._lock:
            failures, _ = self._failures.get(address, (0, 0.0))
            self._failures[address] = (failures + 1, time.monotonic() if now is None else now)
            if len(self._failures) > 100_000:  # a flood of addresses must not grow this without end
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
