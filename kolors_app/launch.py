"""Build the core objects and the UI from settings, and launch the web server with safe defaults."""

from __future__ import annotations

import logging
import threading

import gradio as gr
from gradio.blocks import BlocksConfig
from gradio.state_holder import SessionState
from starlette.middleware import Middleware

from kolors_app.core.config import Settings
from kolors_app.hub.sources import TINY_MODEL
from kolors_app.serving.http_guard import Gatekeeper, client_address
from kolors_app.models.pipeline_manager import PipelineManager
from kolors_app.serving.quotas import QueueQuota, Quotas, resolve
from kolors_app.testing.tiny import tiny_sources
from kolors_app.ui.app import CSS, HEAD, create_app
from kolors_app.ui.i18n import i18n
from kolors_app.api.mcp import mcp_lifespan
from kolors_app.ui.runner import AppContext, public_message
from kolors_app.core.zerogpu import on_zero_gpu

log = logging.getLogger(__name__)


def keep_no_input_values() -> None:
    """Stop gradio from keeping every block's config and every input's last value per session (for deep links,
    which are off).

    With 10,000 sessions kept, 20 requests of 50 MB each stayed in memory for good. And copying the config of
    all ~600 blocks cost each new session 60-110 ms on the event loop: every program request with a new session
    waited that long before it was queued, and a flood of new sessions could keep the loop busy.
    """
    if getattr(SessionState, "kolors_patched", False):
        return
    SessionState._update_value_in_config = lambda self, key, value: None
    start_session, config_for_block = SessionState.__init__, BlocksConfig.config_for_block
    starting = threading.local()

    def new_session(self, blocks):
        starting.active = True
        try:
            start_session(self, blocks)
        finally:
            starting.active = False

    def block_config(*args, **kwargs):
        return {} if getattr(starting, "active", False) else config_for_block(*args, **kwargs)

    SessionState.__init__, BlocksConfig.config_for_block = new_session, staticmethod(block_config)
    SessionState.kolors_patched = True


def limit_queue_per_visitor(app: gr.Blocks, quotas: Quotas) -> None:
    """Refuse a job when its session or client address already has its quota waiting or running."""
    queue, quota = app._queue, QueueQuota(quotas)
    push = queue.push

    def jobs() -> list[tuple[str, str]]:
        events = [event for event_queue in list(queue.event_queue_per_concurrency_id.values())
                  for event in list(event_queue.queue)]
        events += [event for batch in list(getattr(queue, "active_jobs", []) or []) if batch for event in batch]
        return [(event.session_hash, _address(event.request, quotas)) for event in events]

    async def limited_push(body, request, username):
        refusal = quota.refusal(jobs(), body.session_hash, _address(request, quotas))
        if refusal:
            return False, refusal, "queue_full"
        return await push(body, request, username)

    queue.push = limited_push


def _address(request, quotas: Quotas) -> str:
    return client_address(getattr(request, "scope", None) or {}, quotas.trust_forwarded)


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
    sources = tiny_sources() if settings.model == TINY_MODEL and manager is None else None
    ctx = AppContext(settings, manager or PipelineManager(settings, sources=sources))
    app = create_app(ctx)
    app.queue(api_open=False, max_size=settings.queue_size, default_concurrency_limit=1)
    limit_queue_per_visitor(app, resolve(settings))
    return app, ctx


def launch(settings: Settings, manager: PipelineManager | None = None, **overrides) -> tuple[gr.Blocks, AppContext]:
    """Start serving; with `prevent_thread_lock=True` in overrides it returns at once (tests, benches)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app, ctx = build(settings, manager)
    quotas = resolve(settings)
    keep_no_input_values()
    if on_zero_gpu():
        # ZeroGPU moves weights to the GPU lazily, but only those loaded in this process before serving.
        ctx.manager.load()
    elif settings.preload:
        threading.Thread(target=ctx.manager.load, name="preload", daemon=True).start()
    routes = []
    if settings.api:
        from kolors_app.api.a1111 import a1111_router
        from kolors_app.api.a1111.jobs import JobBoard
        from kolors_app.api.rest import native_router

        # One GPU slot and queue bound for both REST APIs; given to the FastAPI app at its creation, so that
        # they come before gradio's own routes.
        board = JobBoard(settings.queue_size, waiting_elsewhere=lambda: len(app._queue))
        message = lambda error: public_message(error, settings)  # noqa: E731
        routes = (a1111_router(ctx, board=board, public_message=message).routes
                  + native_router(ctx, board, public_message=message).routes)
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
        state_session_capacity=quotas.sessions,
        app_kwargs={"middleware": [Middleware(Gatekeeper, quotas=quotas, max_upload_bytes=settings.limits.max_upload_bytes,
                                              upload_dir=gr.utils.get_upload_folder())], "routes": routes,
                    **({"lifespan": mcp_lifespan(app)} if settings.mcp else {})},
        mcp_server=settings.mcp,
        i18n=i18n,
        css=CSS,
        head=HEAD,
        **overrides,
    )
    return app, ctx
