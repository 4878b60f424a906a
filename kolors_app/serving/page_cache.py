"""The page and its config built once per root, and the root itself out of a public visitor's hands.

gradio builds `/config` (680 kB) and the page that embeds it anew on every GET: about 57 ms of the one event
loop each, so a handful of connections asking for it again and again slowed every other visitor. Neither changes
while the app runs, so each is built once for each root (where the page is reached) and kept.

gradio takes that root from the request's Host (or X-Forwarded-Host) header. A public app cannot know which
of those are its own, so it answers with a root it chose: the Space's host, the share link, or the address the
connection reached.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable

CACHED_ROUTE = re.compile(r"^/(?:config/?)?$")
# Headers gradio builds the root from (route_utils.get_request_origin).
ROOT_HEADERS = (b"host", b"x-forwarded-host", b"x-forwarded-proto", b"x-gradio-server")
MAX_ENTRIES = 16
MAX_ENTRY_BYTES = 8 * 1024 * 1024


class PageCache:
    """Whole 200 answers of GET / and /config, by route and root; at most MAX_ENTRIES, the least used dropped."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, tuple[list, bytes]] = OrderedDict()

    @staticmethod
    def key(scope) -> tuple | None:
        """What the answer depends on, or None when it is not kept (another page than the one there is)."""
        if scope.get("method") != "GET" or not CACHED_ROUTE.match(scope.get("path", "")):
            return None
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if any(value for value in query.get("page", [])):
            return None
        headers = dict(scope.get("headers", ()))
        return (scope["path"].rstrip("/"), scope.get("scheme"), scope.get("root_path", ""),
                *(headers.get(name) for name in ROOT_HEADERS))

    async def serve(self, key: tuple, app, scope, receive, send) -> None:
        """Answer from the cache, or let gradio answer and keep a whole 200 answer."""
        kept = self._entries.get(key)
        if kept is not None:
            self._entries.move_to_end(key)
            headers, body = kept
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        start, chunks = {}, []

        async def keep(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body" and start.get("status") == 200:
                chunks.append(message.get("body", b""))
                if not message.get("more_body") and sum(map(len, chunks)) <= MAX_ENTRY_BYTES:
                    self._entries[key] = (list(start.get("headers", [])), b"".join(chunks))
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
            await send(message)

        await app(scope, receive, keep)

    def __len__(self) -> int:
        return len(self._entries)


def chosen_root(scope, share_url: Callable[[], str | None]) -> str:
    """A public app's root: the Space's host, else the share link, else the address this connection reached."""
    space_host = os.environ.get("SPACE_HOST")
    if space_host:
        return f"https://{space_host}"
    link = share_url()
    if link:
        return link.rstrip("/")
    host, port = scope.get("server") or ("127.0.0.1", 80)
    host = f"[{host}]" if ":" in host else host
    return f"{scope.get('scheme', 'http')}://{host}:{port}"


def with_root(scope, root: str) -> dict:
    """The scope with the headers gradio builds its root from replaced by those of `root`."""
    parts = urllib.parse.urlsplit(root)
    headers = [(name, value) for name, value in scope.get("headers", ()) if name not in ROOT_HEADERS]
    headers.append((b"host", parts.netloc.encode("latin-1")))
    if parts.scheme == "https":
        headers.append((b"x-forwarded-proto", b"https"))
    return dict(scope, headers=headers)
