"""Who is asking: a request's headers and its client address (the proxy's right-most X-Forwarded-For hop, or the
socket's peer). Without gradio, so that the REST entrances can use it."""

from __future__ import annotations


def header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def client_address(scope, trust_forwarded: bool) -> str:
    """The visitor's address: the proxy's last X-Forwarded-For entry when behind one, else the socket's peer."""
    if trust_forwarded:
        forwarded = header(scope, b"x-forwarded-for")
        if forwarded and forwarded.split(",")[-1].strip():
            return forwarded.split(",")[-1].strip()
    client = scope.get("client")
    return client[0] if client else "unknown"
