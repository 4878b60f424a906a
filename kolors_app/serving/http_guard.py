"""ASGI middleware in front of gradio: host names, body sizes, upload quota and cache cap, logins (and the login
that MCP and the API schema need under --auth), deep links, GETs per address, the cached page, and gradio's
protocol (gradio_protocol.py).

Every refusal is answered before gradio reads the request, with a short plain-text reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import threading
import urllib.parse
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from kolors_app.patches.gradio import page_user
from kolors_app.serving.addresses import client_address, header
from kolors_app.serving.cache_paths import served_scope
from kolors_app.serving.gradio_protocol import (CANCEL_ROUTE, EVENT_ROUTE, AppView, StreamSeats, cancel_refusal,
                                                event_refusal, read_body, replay, stream_session)
from kolors_app.serving.page_cache import PageCache, chosen_root, with_root
from kolors_app.serving.logins import REALM, Logins, TooManyAttempts, basic_credentials
from kolors_app.serving.quotas import GET_BURST_SECONDS, Quotas, TokenBuckets, WindowCounter

log = logging.getLogger(__name__)
# Gradio's file routes (`/gradio_api/file=<url>`, `/gradio_api/file/<url>`) fetch public URLs for any caller.
REMOTE_FILE_ROUTE = re.compile(r"/file[=/]\s*[a-z][a-z0-9+.\-]*:", re.IGNORECASE)
UPLOAD_ROUTE = re.compile(r"/upload/?$")
# OpenAI's image edits and variations upload their image (and mask) in the request itself.
IMAGE_FORM_ROUTE = re.compile(r"^/v1/images/(edits|variations)/?$")
IMAGE_FORM_FILES = 2
LOGIN_ROUTE = re.compile(r"/login/?$")
# What programs read under --auth: the REST routes' schema (FastAPI's own, and its pages) and the MCP server.
PROGRAM_ROUTE = re.compile(r"^/+(?:openapi\.json|docs|redoc)(?:/|$)|/gradio_api/+mcp(?:/|$)")
LOGIN_BODY_BYTES = 64 * 1024
UNQUEUED_ROUTE = re.compile(r"/run/predict/?$|/api/[^/]+/?$")
DEEP_LINK_ROUTE = re.compile(r"/deep_link/?$")
# A multipart upload carries a few hundred bytes of headers around the file.
MULTIPART_MARGIN = 64 * 1024
BODY_METHODS = (b"POST", b"PUT", b"PATCH")
READ_METHODS = (b"GET", b"HEAD")
REFUSAL_DELAY = 0.5  # seconds a GET over the limit waits for its 429 (every refusal comes within a second)


async def answer(send, status: int, text: str, headers: list | None = None) -> None:
    """A plain-text response."""
    body = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())] + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def host_name(value: str | None) -> str:
    """The host of a Host header, lower case, without the port."""
    value = (value or "").strip().lower()
    if value.startswith("["):
        return value[:value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Gatekeeper:
    """The middleware; one per app, holding the counters of this process."""

    def __init__(self, app, quotas: Quotas, max_upload_bytes: int, upload_dir=None, view: AppView | None = None,
                 share_url=None, cache_pages: bool = False, logins: Logins | None = None):
        """`view` answers what gradio knows (events, sessions); `share_url()` is the share link once there is one,
        and set only for a public app, whose root it then chooses; `cache_pages` keeps / and /config (no --auth)."""
        self.app = app
        self.quotas = quotas
        self.max_upload_bytes = max_upload_bytes
        self.upload_dir = upload_dir
        self.view = view or AppView()
        self.share_url = share_url
        self.pages = PageCache() if cache_pages else None
        self.uploads = WindowCounter(3600.0)
        self.logins = logins or Logins(quotas.login_free_attempts)
        self.gets = TokenBuckets(quotas.get_rate, quotas.get_rate * GET_BURST_SECONDS) if quotas.get_rate else None
        self.streams = StreamSeats()
        self.unqueued: dict[str, int] = {}
        self._lock = threading.Lock()
        self._evicting = False

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        allowed = self.quotas.allowed_hosts
        host = host_name(header(scope, b"host"))
        if allowed is not None and host not in allowed:
            # A DNS-rebinding page reaches a local app under its own name: answer only to ours.
            if scope["type"] == "http":
                await answer(send, 421, "Unknown host name. Start the app with --allowed-hosts to add it.")
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if REMOTE_FILE_ROUTE.search(path):
            await answer(send, 403, "Remote files are not served.")
            return
        if DEEP_LINK_ROUTE.search(path):
            # It writes a session's whole state to disk for anyone who names the session.
            await answer(send, 404, "Not found.")
            return
        if b"deep_link" in scope.get("query_string", b""):
            scope = dict(scope, query_string=_without_deep_link(scope["query_string"]))
        address = client_address(scope, self.quotas.trust_forwarded)
        method = scope.get("method", "GET").encode()
        site = _site_of(scope)  # before the root is chosen: the Host the browser itself sent
        if self.share_url is not None:
            scope = with_root(scope, chosen_root(scope, self.share_url))
        if self.logins.programs_need_login and PROGRAM_ROUTE.search(path):
            refused = self._program_login_refusal(scope, address)
            if refused:
                await answer(send, *refused)
                return
        if method in READ_METHODS:
            await self._read(scope, receive, send, address, path)
            return
        if method in BODY_METHODS:
            refused = self._body_refusal(scope, path, address)
            if refused:
                await answer(send, *refused)
                return
        if LOGIN_ROUTE.search(path) and method == b"POST":
            await self._login(scope, receive, send, address)
        elif (EVENT_ROUTE.search(path) or CANCEL_ROUTE.search(path)) and method == b"POST":
            await self._checked_event(scope, receive, send, address, path)
        elif UPLOAD_ROUTE.search(path) and method == b"POST":
            if site is not None:
                await answer(send, 403, f"Uploads from another site ({site}) are refused.")
                return
            await self._upload(scope, receive, send, address)
        elif IMAGE_FORM_ROUTE.search(path) and method == b"POST":
            self.uploads.add(address, int(header(scope, b"content-length") or 0))
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _read(self, scope, receive, send, address: str, path: str):
        if self.gets is not None:
            wait = self.gets.take(address)
            if wait > 0:
                # Refused, yet still answered late: a flood of quick refusals would take the one event loop and the
                # GIL from everyone else (16 connections sent 700 a second and slowed a run 3x).
                await asyncio.sleep(REFUSAL_DELAY)
                seconds = max(1, math.ceil(wait))
                await answer(send, 429, f"Too many requests from your address; try again in {seconds} s.",
                             [(b"retry-after", str(seconds).encode())])
                return
        query = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        seat = stream_session(path, query)
        if seat is not None:
            if not self.streams.take(seat):
                # A second stream would take the first one's messages, and end its events when dropped.
                await answer(send, 409, "This session already has an open stream.")
                return
            await self.streams.hold(seat, self.app, scope, receive, send)
            return
        served = served_scope(scope, self.upload_dir) if self.upload_dir is not None else None
        if served is not None:
            scope = served  # a result file named by its cache name (cache_paths.py)
        key = self.pages.key(scope) if self.pages is not None else None
        if key is not None:
            await self.pages.serve(key, self.app, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _checked_event(self, scope, receive, send, address: str, path: str):
        body = await read_body(receive, self.quotas.max_request_bytes)
        if body is None:
            await answer(send, 400, "Incomplete request body.")
            return
        if CANCEL_ROUTE.search(path):
            refused, status = cancel_refusal(body, self.view), 404
        else:
            refused, status = event_refusal(path, body, self.view), 422
        if refused:
            await answer(send, status, refused)
            return
        receive = replay(body, receive)
        if UNQUEUED_ROUTE.search(path):
            await self._unqueued(scope, receive, send, address)
        else:
            await self.app(scope, receive, send)

    def _body_refusal(self, scope, path: str, address: str):
        length = header(scope, b"content-length")
        if length is None and header(scope, b"transfer-encoding") is not None:
            return 411, "A Content-Length is required."
        if length is not None and not length.strip().isdigit():
            return 400, "Bad Content-Length."
        size = int(length or 0)
        files = 1 if UPLOAD_ROUTE.search(path) else IMAGE_FORM_FILES if IMAGE_FORM_ROUTE.search(path) else 0
        if files:
            if size > self.max_upload_bytes * files + MULTIPART_MARGIN:
                return 413, (f"Upload too large: at most {self.max_upload_bytes * files / 1024 / 1024:.1f} MB per "
                             "request.")
            if self.uploads.total(address) + size > self.quotas.upload_quota_bytes:
                return 429, (f"Upload quota reached: {self.quotas.upload_quota_bytes / 1024 / 1024:.0f} MB per "
                             "hour; try again later."), [(b"retry-after", b"600")]
            return None
        if size > self.quotas.max_request_bytes:
            return 413, f"Request too large: at most {self.quotas.max_request_bytes / 1024 / 1024:.1f} MB."
        return None

    def _program_login_refusal(self, scope, address: str):
        """None when the request carries the page's login cookie or a REST user's HTTP Basic credentials."""
        if page_user(scope) is not None:
            return None
        given = basic_credentials(header(scope, b"authorization"))
        if given is not None:
            try:
                if self.logins.check_basic(address, *given):
                    return None
            except TooManyAttempts as refused:
                return 429, str(refused), [(b"retry-after", str(refused.retry_after).encode())]
        return 401, "Log in: HTTP Basic credentials of a REST user (--api-auth, else --auth), or the page's login.", \
            [(b"www-authenticate", REALM.encode())]

    async def _login(self, scope, receive, send, address: str):
        body = await read_body(receive, LOGIN_BODY_BYTES)
        if body is None:
            await answer(send, 413, "Login form too large.")
            return
        user = await form_user(scope, body)
        try:
            # Reserved before gradio checks the password: logins sent at once are counted as they are checked.
            attempt = self.logins.begin(address, user)
        except TooManyAttempts as refused:
            await answer(send, 429, str(refused), [(b"retry-after", str(refused.retry_after).encode())])
            return
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, replay(body, receive), watch)
        finally:
            code = status.get("code")  # gradio: 200 logged in, 400 wrong credentials
            self.logins.end(attempt, True if code == 200 else False if code in (400, 401) else None)

    async def _unqueued(self, scope, receive, send, address: str):
        with self._lock:
            running = self.unqueued.get(address, 0)
            if running >= self.quotas.unqueued_per_address:
                refused = True
            else:
                refused = False
                self.unqueued[address] = running + 1
        if refused:
            await answer(send, 429, "Too many requests at once; slow down.", [(b"retry-after", b"1")])
            return
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.unqueued[address] -= 1
                if not self.unqueued[address]:
                    del self.unqueued[address]

    async def _upload(self, scope, receive, send, address: str):
        self.uploads.add(address, int(header(scope, b"content-length") or 0))
        await self.app(scope, receive, send)
        if self.upload_dir is not None and not self._evicting:
            self._evicting = True
            try:
                await asyncio.to_thread(evict_oldest, self.upload_dir, self.quotas.upload_cache_bytes)
            finally:
                self._evicting = False


def _site_of(scope) -> str | None:
    """The other site a browser request comes from (by Sec-Fetch-Site, then Origin), or None for this one.

    Programs (gradio_client, curl) send neither header, and a browser cannot leave them out of a cross-site form.
    """
    fetch_site = header(scope, b"sec-fetch-site")
    if fetch_site in ("same-origin", "none"):
        return None
    origin = header(scope, b"origin")
    if fetch_site == "cross-site" or (fetch_site is not None and origin is None):
        return (origin or fetch_site)[:80]
    if origin is None:
        return None
    ours = (header(scope, b"host") or "").lower()
    return None if urllib.parse.urlsplit(origin).netloc.lower() == ours != "" else (origin[:80] or "null")


def _without_deep_link(query: bytes) -> bytes:
    pairs = urllib.parse.parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return urllib.parse.urlencode([(key, value) for key, value in pairs if key != "deep_link"]).encode("latin-1")


def evict_oldest(folder, cap_bytes: int) -> int:
    """Delete the oldest files under `folder` until it holds at most `cap_bytes`; returns the bytes removed."""
    files = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    removed = 0
    for _mtime, size, path in sorted(files):
        if total - removed <= cap_bytes:
            break
        try:
            path.unlink()
            removed += size
        except FileNotFoundError:
            continue
    if removed:
        log.info("upload cache over %d MB: removed %d MB of the oldest files", cap_bytes >> 20, removed >> 20)
    return removed




async def _disconnected():
    return {"type": "http.disconnect"}


async def form_user(scope, body: bytes) -> str:
    """The user name of a login form (stripped, as gradio strips it); "" when there is none."""
    try:
        async with Request(scope, replay(body, _disconnected)).form() as form:
            user = form.get("username")
    except (HTTPException, MultiPartException):  # a malformed form: gradio refuses it too
        return ""
    return user.strip() if isinstance(user, str) else ""
