"""The MCP server (`--mcp`): gradio's, with each generated image answered as MCP image content."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

import anyio
import gradio as gr

from kolors_app.serving.http_guard import client_address
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


def content_of(server, data, root_url: str, fallback) -> list:
    """Gallery items -> image content (the PNG file as it is, parameters included) and their URL; dicts -> JSON."""
    types, content = server.types, []
    for output in flatten_outputs(data):
        if is_gallery(output):
            for item in output:
                image = item["image"]
                path = Path(image.get("path") or "")
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


def mcp_lifespan(app: gr.Blocks, trust_forwarded: bool = False):
    """A FastAPI lifespan that fits gradio's MCP server to this app once it exists (it is built at launch):
    galleries as image content, each call owned by its own caller, and a cancelled call's job stopped."""

    @contextlib.asynccontextmanager
    async def lifespan(_fastapi_app):
        server = getattr(app, "mcp_server_obj", None)
        if server is not None:
            # gradio answers one image output as image content (re-encoded, without its PNG text), a gallery as text.
            original = server.postprocess_output_data
            server.postprocess_output_data = lambda data, root_url: content_of(server, data, root_url, original)
            own_callers(server, trust_forwarded)
            stop_cancelled_calls(server)
        yield

    return lifespan


def own_callers(server, trust_forwarded: bool) -> None:
    """Each call names its MCP caller in a signed header: gradio's one internal client would otherwise make every
    MCP caller one queue session from one address (a second client got "queue full")."""
    prepare = server._prepare_tool_call_args

    def prepare_with_owner(name, arguments):
        endpoint, args, headers, block_fn = prepare(name, arguments)
        context = server.mcp_server.request_context.request
        scope = getattr(context, "scope", None) or {}
        session = context.headers.get("mcp-session-id") or context.query_params.get("session_id") or ""
        headers[MCP_OWNER_HEADER] = sign_mcp_caller(session, client_address(scope, trust_forwarded))
        return endpoint, args, headers, block_fn

    server._prepare_tool_call_args = prepare_with_owner


def stop_cancelled_calls(server) -> None:
    """A call its client cancels (or drops) cancels gradio's internal job, which stops the engine's job."""
    with_progress = server._execute_tool_with_progress

    async def cancel(job) -> None:
        if not job.done():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(job.cancel)

    async def progressing(job, token):
        try:
            return await with_progress(job, token)
        except BaseException:
            await cancel(job)
            raise

    async def quiet(job):
        try:
            return [await anyio.to_thread.run_sync(job.result, abandon_on_cancel=True)]
        except BaseException:
            await cancel(job)
            raise

    server._execute_tool_with_progress, server._execute_tool_without_progress = progressing, quiet
