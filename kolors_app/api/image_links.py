"""Links for OpenAI's `response_format: url`: the images kept in memory for one hour under unguessable names.

Nothing is written to disk. The name is the only key (as OpenAI's own signed links), so a link works in a browser
or a chat front end without the API key. The store has a byte cap: past it the oldest links go first.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from typing import Callable

LIFETIME_SECONDS = 3600
MAX_BYTES = 256 * 1024 * 1024
PATH = "/v1/images/files"


class ImageLinks:
    """Image bytes by link name, each for LIFETIME_SECONDS, at most `max_bytes` in all."""

    def __init__(self, max_bytes: int = MAX_BYTES, lifetime: float = LIFETIME_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.max_bytes = max_bytes
        self.lifetime = lifetime
        self.clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def add(self, data: bytes, extension: str = "png") -> str:
        """Keep one image; its link name (`<random>.<extension>`)."""
        name = f"{secrets.token_urlsafe(24)}.{extension}"
        with self._lock:
            self._expire()
            self._items[name] = (self.clock() + self.lifetime, data)
            self._size += len(data)
            while self._size > self.max_bytes and len(self._items) > 1:
                self._drop(next(iter(self._items)))
        return name

    def get(self, name: str) -> bytes | None:
        """The image of a link name, or None once it expired, was dropped or never existed."""
        with self._lock:
            self._expire()
            found = self._items.get(name)
        return found[1] if found else None

    def _expire(self) -> None:
        now = self.clock()
        while self._items and next(iter(self._items.values()))[0] <= now:
            self._drop(next(iter(self._items)))

    def _drop(self, name: str) -> None:
        _, data = self._items.pop(name)
        self._size -= len(data)


def origin_of(request, trust_forwarded: bool) -> str:
    """The app's own origin as the client reached it (its Host header, which the HTTP guard has checked)."""
    scheme = request.url.scheme
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
    if trust_forwarded and forwarded in ("http", "https"):  # a Space or share link ends TLS at its proxy
        scheme = forwarded
    host = request.headers.get("host") or request.url.netloc
    return f"{scheme}://{host}"


__all__ = ["ImageLinks", "origin_of", "PATH", "LIFETIME_SECONDS"]
