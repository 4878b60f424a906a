"""One login back-off for every entrance: the page's form (/login), HTTP Basic on the REST routes, and the login
MCP and the API schema need under --auth.

Wrong passwords are counted per client address and per user name. The per-user count stops guesses spread over
many addresses; so that a stranger guessing a user's password cannot lock that user out, an address where the
user logged in within the last day is exempt from the user's count (never from its own address count).
"""

from __future__ import annotations

import base64
import binascii
import math
import secrets
import threading
import time

from kolors_app.core.config import Settings
from kolors_app.core.logins import Login
from kolors_app.serving.quotas import LoginThrottle, resolve

REALM = 'Basic realm="Kolors Studio", charset="UTF-8"'


class TooManyAttempts(Exception):
    """Wrong passwords came too fast from this address or for this user; `retry_after` is in whole seconds."""

    def __init__(self, wait: float):
        self.retry_after = max(1, math.ceil(wait))  # rounded up: trying again after Retry-After must be allowed
        super().__init__(f"Too many wrong passwords; try again in {self.retry_after} s.")


def basic_credentials(value: str | None) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic` header; None when there is none or it is malformed."""
    scheme, _, encoded = (value or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # RFC 7617's legacy charset, still sent by some clients
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


class Attempt:
    """A reserved login attempt: the throttle keys it counts on."""

    def __init__(self, address: str, user: str, keys: tuple[str, ...]):
        self.address, self.user, self.keys = address, user, keys


class Logins:
    """The back-off, the REST users, and whether programs (MCP, the API schema) need a login."""

    TRUST_SECONDS = 24 * 3600.0
    MAX_TRUSTED = 10_000

    def __init__(self, free_attempts: int, api_users: tuple[Login, ...] = (), programs_need_login: bool = False):
        self.throttle = LoginThrottle(free_attempts)
        self.api_users = api_users
        self.programs_need_login = programs_need_login
        self._trusted: dict[tuple[str, str], float] = {}  # (address, user) -> when the user last logged in there
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: Settings) -> Logins:
        """The REST routes take --api-auth's users, else --auth's; --auth makes MCP and the API schema need one."""
        return cls(resolve(settings).login_free_attempts, settings.api_auth or settings.auth, bool(settings.auth))

    def trusts(self, address: str, user: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            since = self._trusted.get((address, user))
        return since is not None and now - since < self.TRUST_SECONDS

    def begin(self, address: str, user: str) -> Attempt:
        """Reserve an attempt before the password is checked; raises TooManyAttempts instead."""
        keys = (f"address:{address}",) if self.trusts(address, user) else (f"address:{address}", f"user:{user}")
        wait = self.throttle.reserve(keys)
        if wait > 0:
            raise TooManyAttempts(wait)
        return Attempt(address, user, keys)

    def end(self, attempt: Attempt, succeeded: bool | None) -> None:
        """Settle an attempt: a success clears its address's count (not its user's: a stranger guessing that user
        would get fresh attempts with each of the user's logins) and trusts the address; None = no verdict."""
        if succeeded is None:
            self.throttle.settle(attempt.keys, None)
        elif not succeeded:
            self.throttle.settle(attempt.keys, True)
        else:
            self.throttle.settle(attempt.keys[:1], False)
            self.throttle.settle(attempt.keys[1:], None)
            with self._lock:
                self._trusted.pop((attempt.address, attempt.user), None)
                self._trusted[(attempt.address, attempt.user)] = time.monotonic()
                while len(self._trusted) > self.MAX_TRUSTED:
                    self._trusted.pop(next(iter(self._trusted)))

    def check_basic(self, address: str, user: str, password: str) -> bool:
        """Whether these are one of the REST users' credentials, counted by the back-off (TooManyAttempts)."""
        attempt = self.begin(address, user)
        right = False
        for login in self.api_users:  # every user compared, in constant time: no timing tells which names exist
            # surrogateescape: a variable's bytes that are not UTF-8 (Python keeps them as surrogates) stay bytes.
            right |= secrets.compare_digest(user.encode(), login.user.encode("utf-8", "surrogateescape")) \
                & secrets.compare_digest(password.encode(), login.password.encode("utf-8", "surrogateescape"))
        self.end(attempt, right)
        return right
