"""What the REST entrances share: the caller as a job owner, waiting for a job while watching the client, and
refusals as JSON data."""

from __future__ import annotations

from typing import Callable

import anyio
from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from kolors_app.core.errors import ValidationError
from kolors_app.engine.engine import JobHandle
from kolors_app.engine.jobs import JobOutcome, Owner
from kolors_app.serving.addresses import client_address
from kolors_app.serving.logins import REALM, Logins, TooManyAttempts, basic_credentials
from kolors_app.serving.owners import api_owner
from kolors_app.serving.quotas import resolve

# How often a waiting route looks whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.25


def error_response(status: int, error: str, detail: str, field: str | None = None,
                   refusal: ValidationError | None = None) -> JSONResponse:
    """A1111's error shape ({"error", "detail"}), plus the field at fault and, for a refusal, its code and the
    allowed values or range."""
    body = {"error": error, "detail": detail, "field": field}
    if refusal is not None:
        body.update(code=refusal.code, allowed=refusal.allowed)
    return JSONResponse(body, status_code=status)


def refusal_response(error: ValidationError) -> JSONResponse:
    """A refused value: HTTP 422 naming the field, with the code and what is allowed."""
    return error_response(422, "Invalid input", str(error), error.field, error)


def credentials_check(settings, logins: Logins | None = None) -> Callable:
    """A dependency requiring HTTP Basic credentials of the REST users (--api-auth, else --auth) when there are
    any, counted by the login back-off (429 with Retry-After); it gives the user name (None without users)."""
    logins = logins or Logins.of(settings)
    trust_forwarded = resolve(settings).trust_forwarded

    # async: it runs on the event loop, so an attempt is reserved, checked and settled with nothing in between.
    async def check(request: Request) -> str | None:
        if not logins.api_users:
            return None
        given = basic_credentials(request.headers.get("authorization"))
        if given is not None:
            try:
                if logins.check_basic(client_address(request.scope, trust_forwarded), *given):
                    return given[0]
            except TooManyAttempts as refused:
                raise HTTPException(429, str(refused), headers={"Retry-After": str(refused.retry_after)}) from None
        raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": REALM})

    return check


def owner_dependency(settings, check: Callable) -> Callable:
    """A dependency giving the caller as a job owner: its user name (from `check`, the router's credentials check,
    which then runs once per request) when logged in, else its client address."""
    trust_forwarded = resolve(settings).trust_forwarded

    def owner(request: Request, user: str | None = Depends(check)) -> Owner:
        return api_owner(request.scope, user, trust_forwarded)

    return owner


async def outcome_of(handle: JobHandle, http: Request) -> JobOutcome:
    """Wait for the job's outcome (or its failure, raised); a client that goes away stops the job."""
    async def watch() -> None:
        while not handle.ended:
            if await http.is_disconnected():
                handle.stop()
                return
            await anyio.sleep(DISCONNECT_POLL_SECONDS)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await anyio.to_thread.run_sync(handle.wait, abandon_on_cancel=True)
            group.cancel_scope.cancel()
    finally:
        if not handle.ended:
            handle.stop()
    return handle.result()  # outside the task group: a refusal is raised as itself, not in an ExceptionGroup
