"""The MCP server (`--mcp`): gradio's, with each generated image answered as MCP image content."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

import gradio as gr

from kolors_app.patches.gradio import (answer_mcp_outputs_with, cancel_dropped_mcp_calls, log_in_mcp_client,
                                      name_mcp_callers)
from kolors_app.serving.cache_paths import cache_file
from kolors_app.serving.addresses import client_address
from kolors_app.serving.owners import MCP_OWNER_HEADER, sign_mcp_caller


def flatten_outputs(data) -> list:
    """gradio hands over an endpoint's outputs as one tuple (gallery, summary) inside a list: one flat list."""
    flat = []
    for output in data:
        if isinstance(output, (list, tuple)) and not is_gallery(output):
            flat += flatten_outputs(output)
        else:
            flat.append(output)
    return flat


def is_gallery(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(item, dict) and "image" in item for item in value)


def content_of(types, data, root_url: str, fallback) -> list:
    """Gallery items -> image content (the PNG file as it is, parameters included) and their URL; dicts -> JSON."""
    content = []
    for output in flatten_outputs(data):
        if is_gallery(output):
            for item in output:
                image = item["image"]
                named = image.get("path") or ""  # a name in the cache folder (cache_paths.py), or gradio's own path
                path = cache_file(named, gr.utils.get_upload_folder()) or Path(named)
                if path.is_file() and path.suffix == ".png":
                    content.append(types.ImageContent(type="image", mimeType="image/png",
                                                      data=base64.b64encode(path.read_bytes()).decode("ascii")))
                    content.append(types.TextContent(type="text", text=f"Image URL: {image.get('url') or path}"))
                else:
                    content += fallback([image], root_url)
        elif isinstance(output, dict):
            content.append(types.TextContent(type="text", text=json.dumps(output, ensure_ascii=False)))
        else:
            content += fallback([output], root_url)
    return content


def mcp_lifespan(app: gr.Blocks, trust_forwarded: bool = False, log_in: bool = False):
    """A FastAPI lifespan that fits gradio's MCP server to this app once it exists (it is built at launch):
    galleries as image content, each call owned by its own caller, a dropped call's job stopped, and, with
    `log_in` (under --auth), gradio's internal client logged in (its callers log in at the MCP endpoint)."""

    def caller_header(request) -> tuple[str, str]:
        scope = getattr(request, "scope", None) or {}
        session = request.headers.get("mcp-session-id") or request.query_params.get("session_id") or ""
        return MCP_OWNER_HEADER, sign_mcp_caller(session, client_address(scope, trust_forwarded))

    @contextlib.asynccontextmanager
    async def lifespan(fastapi_app):
        # gradio answers one image output as image content (re-encoded, without its PNG text), a gallery as text.
        answer_mcp_outputs_with(app, content_of)
        name_mcp_callers(app, caller_header)
        cancel_dropped_mcp_calls(app)
        if log_in:
            log_in_mcp_client(app, fastapi_app)
        yield

    return lifespan
