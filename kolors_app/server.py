"""Build the core objects and the UI from settings, and launch the web server with safe defaults."""

from __future__ import annotations

import logging
import re
import threading

import gradio as gr
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

from .config import Settings
from .pipelines import PipelineManager
from .ui.app import CSS, HEAD, create_app
from .ui.i18n import i18n
from .ui.mcp import mcp_lifespan
from .ui.runner import AppContext
from .zerogpu import on_zero_gpu

log = logging.getLogger(__name__)
# Gradio's file routes (`/gradio_api/file=<url>`, `/gradio_api/file/<url>`) fetch public URLs for any caller.
REMOTE_FILE_ROUTE = re.compile(r"/file[=/]\s*[a-z][a-z0-9+.\-]*:", re.IGNORECASE)


class NoRemoteFiles:
    """ASGI middleware: the file routes serve this server's own files, never a URL fetched for the caller.

    The app never shows a remote file, so that gradio feature would only make the server an open proxy.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and REMOTE_FILE_ROUTE.search(scope.get("path", "")):
            await PlainTextResponse("Remote files are not served.", status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """`user:password` -> (user, password); None when unset."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise SystemExit("auth: expected user:password")
    return user, password


def build(settings: Settings, manager: PipelineManager | None = None) -> tuple[gr.Blocks, AppContext]:
    """The app, queued so that nothing skips the queue, and its context; not launched."""
    ctx = AppContext(settings, manager or PipelineManager(settings))
    app = create_app(ctx)
    app.queue(api_open=False, max_size=settings.queue_size, default_concurrency_limit=1)
    return app, ctx


def launch(settings: Settings, manager: PipelineManager | None = None, **overrides) -> tuple[gr.Blocks, AppContext]:
    """Start serving; with `prevent_thread_lock=True` in overrides it returns at once (tests, benches)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app, ctx = build(settings, manager)
    if on_zero_gpu():
        # ZeroGPU moves weights to the GPU lazily, but only those loaded in this process before serving.
        ctx.manager.load()
    elif settings.preload:
        threading.Thread(target=ctx.manager.load, name="preload", daemon=True).start()
    routes = []
    if settings.api:
        from .a1111 import a1111_router

        # Given to the FastAPI app at its creation, so they come before gradio's own routes.
        routes = a1111_router(ctx, waiting_elsewhere=lambda: len(app._queue)).routes
    app.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        auth=parse_auth(settings.auth),
        max_file_size=settings.limits.max_upload_bytes,
        enable_monitoring=False,
        # The History tab is the one record of a visitor's runs, and its Clear button clears it all.
        run_history=False,
        show_error=False,
        app_kwargs={"middleware": [Middleware(NoRemoteFiles)], "routes": routes,
                    **({"lifespan": mcp_lifespan(app)} if settings.mcp else {})},
        mcp_server=settings.mcp,
        i18n=i18n,
        css=CSS,
        head=HEAD,
        **overrides,
    )
    return app, ctx
