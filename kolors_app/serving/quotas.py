"""What one visitor may take of a shared server: work per request, jobs in the queue, uploads, logins.

Plain functions and small classes, without gradio, so that every front end (the UI, the A1111 API)
applies the same limits. Defaults differ for a local app and a public one (share link, Space).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass

from kolors_app.core.config import Settings, on_spaces
from kolors_app.engine.cost import Budget
from kolors_app.engine.engine import EngineLimits

@dataclass(frozen=True)
class Quotas:
    """The resolved limits (auto settings replaced by the local or public default)."""

    max_work: float  # megapixel-steps of one job (kolors_app/engine/cost.py counts them)
    max_output_mp: float  # megapixels of images one job hands back
    queue_per_session: int  # jobs waiting or running per browser session
    queue_per_address: int  # ... per client address (0 = no limit)
    sessions: int  # sessions whose state gradio keeps in memory
    max_request_bytes: int  # body of any request but an upload
    upload_quota_bytes: int  # uploaded per client address per hour
    upload_cache_bytes: int  # uploads and results in gradio's cache folder, oldest removed first
    outputs_free_bytes: int  # free disk kept on the outputs folder's disk
    unqueued_per_address: int  # unqueued events running at once per client address
    login_free_attempts: int  # wrong passwords before the back-off starts
    get_rate: int  # GET requests per second per client address after a burst (0 = no limit)
    trust_forwarded: bool  # take the client address from X-Forwarded-For (behind a proxy)
    allowed_hosts: tuple[str, ...] | None  # Host names answered; None = any


# (local, public) defaults of every quota setting left at auto (None).
DEFAULTS = {
    "max_work": (2600.0, 300.0),
    "max_output_mp": (64.0, 16.0),
    "queue_per_session": (4, 1),
    "queue_per_address": (0, 1),
    "sessions": (1000, 200),
    "max_request_mb": (4, 4),
    "upload_quota_mb": (2000, 200),
    "upload_cache_mb": (4096, 2048),
    "outputs_free_mb": (1024, 1024),
    "unqueued_per_address": (8, 4),
    "login_free_attempts": (5, 5),
    # A page load makes about 115 GETs at once and a program polls progress once a second; a flood of /config
    # (680 kB each) from one address must not take the event loop from everyone else.
    "get_rate": (0, 20),
}
GET_BURST_SECONDS = 30  # 600 at the public rate: five page loads in a row
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
        max_work=float(value("max_work")), max_output_mp=float(value("max_output_mp")),
        queue_per_session=value("queue_per_session"),
        queue_per_address=value("queue_per_address"), sessions=value("sessions"),
        max_request_bytes=value("max_request_mb") * mb, upload_quota_bytes=value("upload_quota_mb") * mb,
        upload_cache_bytes=value("upload_cache_mb") * mb, outputs_free_bytes=value("outputs_free_mb") * mb,
        unqueued_per_address=value("unqueued_per_address"), login_free_attempts=value("login_free_attempts"),
        get_rate=value("get_rate"),
        trust_forwarded=proxied, allowed_hosts=allowed_hosts(settings, public or proxied))


def allowed_hosts(settings: Settings, reached_by_name: bool) -> tuple[str, ...] | None:
    """Host names a local app answers to (DNS-rebinding protection); None (any) for a public or proxied one."""
    if settings.allowed_hosts:
        return tuple(name.strip().lower() for name in settings.allowed_hosts.split(",") if name.strip())
    if reached_by_name or settings.host not in ("127.0.0.1", "localhost", "::1"):
        return None  # reached by a name this app cannot know; --allowed-hosts restricts it
    return LOCAL_HOSTS


def engine_limits(settings: Settings) -> EngineLimits:
    """The job engine's budget and queue bounds for these settings."""
    quotas = resolve(settings)
    return EngineLimits(Budget(quotas.max_work, quotas.max_output_mp), queue_size=settings.queue_size,
                        per_owner=quotas.queue_per_session, per_address=quotas.queue_per_address)


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
    """Amounts per key over a sliding window (upload bytes per address per hour).

    A key whose amounts have all left the window is dropped, and at most `max_keys` keys are kept (the one
    least recently added to goes first), so a flood of addresses cannot grow it without end.
    """

    def __init__(self, window: float, max_keys: int = 100_000):
        self.window = window
        self.max_keys = max_keys
        self._items: dict[str, deque] = {}
        self._lock = threading.Lock()

    def total(self, key: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        with self._lock:
            items = self._items.get(key)
            if items is None:
                return 0
            self._expire(key, items, now)
            return sum(amount for _, amount in items)

    def add(self, key: str, amount: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            items = self._items.pop(key, None) or deque()
            self._items[key] = items  # re-inserted: the dict's order is the order of last use
            items.append((now, amount))
            # A few of the oldest keys are looked at on each add: expired ones go, and the cap holds.
            for old in list(itertools.islice(self._items, 2)):
                if old != key:
                    self._expire(old, self._items[old], now)
            while len(self._items) > self.max_keys:
                self._items.pop(next(iter(self._items)))

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self, key: str, items: deque, now: float) -> None:
        while items and items[0][0] < now - self.window:
            items.popleft()
        if not items:
            del self._items[key]


class TokenBuckets:
    """Requests per key: `burst` at once, then `rate` a second; a key idle long enough to be full is forgotten."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000):
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when), in the order of last use
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """0 when one request of `key` may go now (and counts it), else the seconds until one may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, when = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.rate)
            self._buckets[key] = (tokens - 1, now) if tokens >= 1 else (tokens, now)
            for old in list(itertools.islice(self._buckets, 2)):
                left, last = self._buckets[old]
                if old != key and left + (now - last) * self.rate >= self.burst:
                    del self._buckets[old]  # full again: the same as never seen
            while len(self._buckets) > self.max_keys:
                self._buckets.pop(next(iter(self._buckets)))
            return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


class LoginThrottle:
    """Back-off after wrong passwords, per key (a client address, a user name): free attempts, then waits doubling
    from 1 s up to 5 minutes.

    An attempt is reserved before its password is checked and settled after, so that guesses sent at once count
    as they are made: while as many attempts as are free are being checked, the next one waits too.
    """

    MAX_WAIT = 300.0
    FORGET_AFTER = 3600.0  # a key without an attempt for an hour starts again with its free attempts
    MAX_KEYS = 100_000  # a flood of addresses or user names must not grow this without end

    def __init__(self, free_attempts: int):
        self.free_attempts = free_attempts
        self._keys: dict[str, list] = {}  # key -> [failures, attempts being checked, time of the last attempt]
        self._lock = threading.Lock()

    def _wait(self, key: str, now: float) -> float:
        failures, checking, last = self._keys.get(key, (0, 0, 0.0))
        if not checking and now - last > self.FORGET_AFTER:
            return 0.0
        tries = failures + checking
        if tries < self.free_attempts:
            return 0.0
        return max(0.0, last + min(self.MAX_WAIT, 2.0 ** (tries - self.free_attempts)) - now)

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds this key must wait before its next attempt (0 = may try now)."""
        with self._lock:
            return self._wait(key, time.monotonic() if now is None else now)

    def reserve(self, keys: tuple[str, ...], now: float | None = None) -> float:
        """Reserve an attempt of every key at once: 0 when reserved, else the seconds to wait (nothing reserved)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            wait = max(self._wait(key, now) for key in keys)
            if wait > 0:
                return wait
            for key in keys:
                failures, checking, last = self._keys.pop(key, (0, 0, 0.0))
                if not checking and now - last > self.FORGET_AFTER:
                    failures = 0
                self._keys[key] = [failures, checking + 1, now]  # re-inserted: the dict's order is least recent first
            while len(self._keys) > self.MAX_KEYS:
                self._keys.pop(next(iter(self._keys)))
            return 0.0

    def settle(self, keys: tuple[str, ...], failed: bool | None, now: float | None = None) -> None:
        """End reserved attempts: failed=True counts a failure, False clears the keys' failures, None (no verdict)
        only ends the reservation."""
        with self._lock:
            for key in keys:
                entry = self._keys.get(key)
                if entry is None:  # dropped by the cap meanwhile
                    entry = self._keys[key] = [0, 1, 0.0]
                entry[1] = max(0, entry[1] - 1)
                if failed:
                    entry[0] += 1
                    entry[2] = time.monotonic() if now is None else now
                elif failed is False:
                    entry[0] = 0
                if not any(entry[:2]):
                    del self._keys[key]
