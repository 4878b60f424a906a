"""Bearer keys for the OpenAI routes (`--api-key`): which calls are let in, who owns their jobs, and a back-off on
wrong keys per client address.

A key is required in public mode and whenever any REST credential (--api-key, --api-auth, --auth) is configured;
only a local app without any accepts every call (the `openai` client always sends some key). A job's owner is the
key's place in --api-key ("key:1"), never the key itself, or the client address when no key is required.
"""

from __future__ import annotations

import math
import secrets

from fastapi import Request

from kolors_app.engine.jobs import Owner
from kolors_app.serving.http_guard import client_address
from kolors_app.serving.owners import api_owner
from kolors_app.serving.quotas import LoginThrottle, is_public, resolve


class KeyRefused(Exception):
    """A call without a valid key: the HTTP status, OpenAI's error code and, for the back-off, when to try again."""

    def __init__(self, status: int, message: str, code: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None for any other header or none."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


class ApiKeys:
    """The key check of one app: its keys, whether one is required, and the wrong-key back-off."""

    def __init__(self, settings):
        self.keys = tuple(key.encode() for key in settings.api_key)
        self.required = bool(settings.api_key or settings.api_auth or settings.auth or is_public(settings))
        quotas = resolve(settings)
        self.trust_forwarded = quotas.trust_forwarded
        self.throttle = LoginThrottle(quotas.login_free_attempts)

    def match(self, token: str) -> int | None:
        """The place of this key in --api-key, or None; every key is compared, in constant time."""
        given, found = token.encode(), None
        for index, key in enumerate(self.keys):
            if secrets.compare_digest(given, key) and found is None:
                found = index
        return found

    def owner(self, request: Request) -> Owner:
        """The caller as a job owner; KeyRefused when its key is missing or wrong, or while it must wait."""
        if not self.required:
            return api_owner(request.scope, None, self.trust_forwarded)
        address = client_address(request.scope, self.trust_forwarded)
        # Reserved before the key is compared: keys sent at once are counted as they are checked.
        wait = self.throttle.reserve((address,))
        if wait > 0:
            seconds = max(1, math.ceil(wait))  # rounded up: trying again after Retry-After must be allowed
            raise KeyRefused(429, f"Too many wrong API keys; try again in {seconds} s.", "rate_limit_exceeded",
                             seconds)
        if not self.keys:
            self.throttle.settle((address,), None)
            raise KeyRefused(401, "This server has no --api-key, so its OpenAI routes are closed: the other REST "
                                  "credentials (--api-auth, --auth) do not open them.", "invalid_api_key")
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            self.throttle.settle((address,), None)  # a missing key guesses nothing
            raise KeyRefused(401, "An API key is required: send `Authorization: Bearer <key>` with a key from "
                                  "--api-key.", "invalid_api_key")
        index = self.match(token)
        if index is None:
            self.throttle.settle((address,), True)
            raise KeyRefused(401, "Incorrect API key.", "invalid_api_key")
        self.throttle.settle((address,), False)
        return Owner("key", str(index + 1), address)


__all__ = ["ApiKeys", "KeyRefused", "bearer_token"]
