"""What the REST entrances share: the caller as a job owner, waiting for a job while watching the client, and
refusals as JSON data."""

from __future__ import annotations

import secrets
from typing import Callable

import anyio
from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from kolors_app.core.errors import ValidationError
from kolors_app.engine.engine import JobHandle
from kolors_app.engine.jobs import JobOutcome, Owner
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


def credentials_check(settings) -> Callable:
    """A dependency requiring HTTP Basic credentials from --api-auth (or --auth) when either is set; it gives the
    user name (None when no credentials are configured)."""
    text = settings.api_auth or settings.auth
    allowed = [tuple(pair.split(":", 1)) for pair in text.split(",")] if text else []
    basic = HTTPBasic(auto_error=False)

    async def credentials(request: Request) -> HTTPBasicCredentials | None:
        # Without credentials configured, A1111 ignores the header: Open WebUI and SillyTavern send `Basic ` then.
        return await basic(request) if allowed else None

    def check(given: HTTPBasicCredentials | None = Depends(credentials)) -> str | None:
        if not allowed:
            return None
        if given is not None and any(secrets.compare_digest(given.username.encode(), user.encode())
                                     & secrets.compare_digest(given.password.encode(), password.encode())
                                     for user, password in allowed):
            return given.username
        raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    return check


def owner_dependency(settings) -> Callable:
    """A dependency giving the caller as a job owner: its user name when logged in, else its client address."""
    check = credentials_check(settings)
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
