"""Checks on gradio's own protocol, answered before gradio reads a request: event bodies, cancels and streams.

gradio answers an unknown `fn_index` or an empty `session_hash` with a 500, cancels any event for anyone, and
lets a second stream of a session take over (and, when dropped, end) the first one's events.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from kolors_app.core.errors import ValidationError
from kolors_app.core.json_body import parse_json

EVENT_ROUTE = re.compile(r"/gradio_api/(?:queue/join|(?:run|api)/(?P<api_name>[^/]+))/?$")
CANCEL_ROUTE = re.compile(r"/gradio_api/cancel/?$")
# The streams a session holds open: its messages (queue/data) and its liveness (heartbeat). A dropped heartbeat
# closes the session's events; a dropped message stream cleans them.
MESSAGES_ROUTE = re.compile(r"/gradio_api/queue/data/?$")
HEARTBEAT_ROUTE = re.compile(r"/gradio_api/heartbeat/(?P<session>[^/]+)/?$")
MAX_SESSION_CHARS = 128
CLOSE_STREAM = b'"close_stream"'


@dataclass(frozen=True)
class AppView:
    """What the checks need to know of the gradio app behind them (plain callables, from launch)."""

    fn_known: Callable[[int], bool] = lambda index: True
    api_known: Callable[[str], bool] = lambda name: True
    event_in_session: Callable[[str, str], bool] = lambda session, event: True


def event_refusal(path: str, body: bytes, view: AppView) -> str | None:
    """Why a queue join or direct call is refused (naming the field), or None."""
    try:
        value = parse_json(body or b"null")
        if not isinstance(value, dict):
            raise ValidationError("body", "must be a JSON object")
        api_name = EVENT_ROUTE.search(path).group("api_name")
        # A direct call by name may come without a session (curl); a queue join or the page's call may not.
        if value.get("session_hash") is not None or api_name in (None, "predict"):
            check_session(value.get("session_hash"))
        index = value.get("fn_index")
        if index is None and (api_name in (None, "predict") or not view.api_known(api_name)):
            raise ValidationError("fn_index", "is required" if api_name in (None, "predict")
                                  else f"is missing and no event is named {api_name!r}")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or not view.fn_known(index)):
            raise ValidationError("fn_index", f"names no event of this app: {str(index)[:40]!r}")
    except ValidationError as error:
        return str(error)
    return None


def cancel_refusal(body: bytes, view: AppView) -> str | None:
    """Why a cancel is refused: only an event of the same session, both named, is cancelled."""
    try:
        value = parse_json(body or b"null")
        if not isinstance(value, dict):
            raise ValidationError("body", "must be a JSON object")
        check_session(value.get("session_hash"))
        event = value.get("event_id")
        if not isinstance(event, str) or not event or not view.event_in_session(value["session_hash"], event):
            raise ValidationError("event_id", "names no waiting or running event of this session")
    except ValidationError as error:
        return str(error)
    return None


def check_session(session) -> None:
    if not isinstance(session, str) or not session.strip() or len(session) > MAX_SESSION_CHARS:
        raise ValidationError("session_hash", f"must be a non-empty string of at most {MAX_SESSION_CHARS} characters")


def stream_session(path: str, query: dict[str, str]) -> str | None:
    """The session whose stream this GET opens (messages or heartbeat), or None for any other request."""
    if MESSAGES_ROUTE.search(path):
        return "messages:" + query.get("session_hash", "")
    heartbeat = HEARTBEAT_ROUTE.search(path)
    return "heartbeat:" + heartbeat.group("session") if heartbeat else None


class StreamSeats:
    """One open stream of each kind per session: a second one is refused while the first is open.

    A stream's seat is freed when its response ends, or when gradio sends it `close_stream` (the client may open
    the next one as soon as it reads that, before the response has quite ended).
    """

    def __init__(self):
        self._open: set[str] = set()

    def take(self, seat: str) -> bool:
        if seat in self._open:
            return False
        self._open.add(seat)
        return True

    async def hold(self, seat: str, app, scope, receive, send) -> None:
        """Run the stream in its seat, and free the seat when it ends."""
        async def watch(message):
            if message["type"] == "http.response.body" and CLOSE_STREAM in message.get("body", b""):
                self._open.discard(seat)
            await send(message)

        try:
            await app(scope, receive, watch)
        finally:
            self._open.discard(seat)

    def __len__(self) -> int:
        return len(self._open)


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body (None if the client left, or sent more than `limit` bytes)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, receive):
    """A receive that hands the app the body already read, then waits on the client as before."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
