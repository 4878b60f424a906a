"""Who owns a job, from the HTTP request that brought it: a page session, an API user or address, an MCP session.

gradio's MCP server calls the app's endpoints through one internal client (one session, from loopback), so
each MCP call carries a header naming its real caller, signed with this process's secret: a client cannot
write that header itself to borrow another owner's quota or jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from kolors_app.engine.jobs import Owner
from kolors_app.serving.addresses import client_address, header

MCP_OWNER_HEADER = "x-kolors-mcp-owner"
_SECRET = secrets.token_bytes(32)


def _signature(text: str) -> str:
    return hmac.new(_SECRET, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def sign_mcp_caller(session: str, address: str) -> str:
    """The header value naming an MCP caller (its MCP session, else its address) for the internal call."""
    text = f"{session[:128]}|{address[:64]}"
    return f"{text}|{_signature(text)}"


def mcp_owner(scope) -> Owner | None:
    """The MCP caller of an internal call, when its header is there and signed by this process; else None."""
    value = header(scope, MCP_OWNER_HEADER.encode()) if scope else None
    if not value or value.count("|") != 2:
        return None
    session, address, signature = value.split("|")
    if not hmac.compare_digest(signature, _signature(f"{session}|{address}")):
        return None
    return Owner("mcp", session or address, address)


def api_owner(scope, user: str | None, trust_forwarded: bool) -> Owner:
    """An API caller: its user name when it logged in, else its client address."""
    address = client_address(scope, trust_forwarded)
    return Owner("user", user, address) if user else Owner("address", address, address)
