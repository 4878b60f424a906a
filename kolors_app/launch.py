"""Build the core objects and the UI from settings, and launch the web server with safe defaults."""

from __future__ import annotations

import logging
import threading

import gradio as gr
from starlette.middleware import Middleware

from kolors_app.core.config import Settings
from kolors_app.core.logins import looks_like_an_old_list
from kolors_app.hub.sources import TINY_MODEL
from kolors_app.serving.cache_paths import hide_cache_paths
from kolors_app.serving.gradio_protocol import AppView
from kolors_app.serving.addresses import client_address
from kolors_app.serving.http_guard import Gatekeeper
from kolors_app.serving.logins import Logins
from kolors_app.models.pipeline_manager import PipelineManager
from kolors_app.engine.engine import Engine
from kolors_app.engine.executors import LocalExecutor
from kolors_app.serving.owners import mcp_owner
from kolors_app.serving.quotas import QueueQuota, Quotas, engine_limits, is_public, resolve
from kolors_app.testing.tiny import tiny_sources
from kolors_app.ui.app import CSS, HEAD, create_app
from kolors_app.ui.i18n import i18n
from kolors_app.api.mcp import mcp_lifespan
from kolors_app.ui.runner import AppContext, public_message
from kolors_app.core.zerogpu import on_zero_gpu
from kolors_app.patches import gradio as gradio_patches
from kolors_app.patches import startup as library_patches
from kolors_app.patches.versions import UnsupportedLibrary

log = logging.getLogger(__name__)


def limit_queue_per_visitor(app: gr.Blocks, quotas: Quotas) -> None:
    """Refuse a job when its owner (a page session, or an MCP call's own caller) or client address already has
    its quota waiting or running in gradio's queue."""
    quota = QueueQuota(quotas)

    def refusal(jobs, session_hash: str, request) -> str | None:
        waiting = [_owner(session, job_request, quotas) for session, job_request in jobs]
        return quota.refusal(waiting, *_owner(session_hash, request, quotas))

    gradio_patches.screen_queue_joins(app, refusal)


def _owner(session: str, request, quotas: Quotas) -> tuple[str, str]:
    """(owner key, address) of a queued event: an MCP call counts as its own caller, not as gradio's client."""
    scope = getattr(request, "scope", None) or {}
    owner = mcp_owner(scope)
    if owner is not None:
        return owner.key, owner.address
    return f"session:{session}", client_address(scope, quotas.trust_forwarded)


def _share_url_of(app: gr.Blocks):
    return lambda: getattr(app, "share_url", None)  # set by launch(share=True) once the link is up


def check_libraries() -> None:
    """Refuse to start when a patched library lacks a name its patches touch; warn loudly outside the tested range."""
    try:
        warnings = library_patches.require_supported()
    except UnsupportedLibrary as error:
        raise SystemExit(str(error)) from None
    for text in warnings:
        log.warning("\n%s\nUNTESTED LIBRARY VERSION: %s\n%s", "!" * 100, text, "!" * 100)


def page_logins(settings: Settings) -> list[tuple[str, str]] | None:
    """gradio's auth=: the (user, password) pairs of --auth; None without any."""
    return [login.as_pair() for login in settings.auth] or None


def warn_about_old_lists(settings: Settings) -> None:
    """Warn where a password looks like the old comma-separated list of users: commas are part of passwords now."""
    for name in ("auth", "api_auth"):
        for login in getattr(settings, name):
            if looks_like_an_old_list(login):
                log.warning("--%s: the password of %r holds ',name:'. Commas no longer separate users: repeat "
                            "--%s (or put one user:password a line) for several.", name.replace("_", "-"),
                            login.user, name.replace("_", "-"))


def build(settings: Settings, manager: PipelineManager | None = None) -> tuple[gr.Blocks, AppContext]:
    """The app (library patches applied), queued so that nothing skips the queue, and its context; not launched."""
    sources = tiny_sources() if settings.model == TINY_MODEL and manager is None else None
    manager = manager or PipelineManager(settings, sources=sources)
    app_holder: list[gr.Blocks] = []
    # One engine for every entrance; its queue bound counts the jobs waiting in gradio's queue too.
    engine = Engine(manager, LocalExecutor(manager), engine_limits(settings),
                    waiting_elsewhere=lambda: gradio_patches.queue_length(app_holder[0]) if app_holder else 0)
    ctx = AppContext(settings, manager, engine=engine)
    app = create_app(ctx)
    app_holder.append(app)
    app.queue(api_open=False, max_size=settings.queue_size, default_concurrency_limit=1)
    limit_queue_per_visitor(app, resolve(settings))
    # Programs get their files by name inside the cache folder, not by the server's absolute path.
    gradio_patches.rewrite_outputs(app, set(app.studio_tabs),
                                   lambda outputs: hide_cache_paths(outputs, gr.utils.get_upload_folder()))
    return app, ctx


def launch(settings: Settings, manager: PipelineManager | None = None, **overrides) -> tuple[gr.Blocks, AppContext]:
    """Start serving; with `prevent_thread_lock=True` in overrides it returns at once (tests, benches)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_libraries()
    warn_about_old_lists(settings)
    app, ctx = build(settings, manager)
    quotas = resolve(settings)
    logins = Logins.of(settings)  # one back-off for the page's login, the REST routes, MCP and the API schema
    if on_zero_gpu():
        # ZeroGPU moves weights to the GPU lazily, but only those loaded in this process before serving.
        ctx.manager.load()
    elif settings.preload:
        threading.Thread(target=ctx.manager.load, name="preload", daemon=True).start()
    routes = []
    if settings.api:
        from kolors_app.api.a1111 import a1111_router
        from kolors_app.api.openai_images import openai_router
        from kolors_app.api.rest import native_router

        # Given to the FastAPI app at its creation, so that they come before gradio's own routes.
        message = lambda error: public_message(error, settings)  # noqa: E731
        routes = openai_router(ctx, public_message=message).routes
        if settings.api_auth or not is_public(settings):
            routes += a1111_router(ctx, public_message=message, logins=logins).routes
            routes += native_router(ctx, public_message=message, logins=logins).routes
        else:  # --api-key alone opens only the /v1 routes: the others would be open to anyone
            log.warning("A public app with --api-key and no --api-auth serves only the OpenAI routes (/v1/)")
    app.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        auth=page_logins(settings),
        max_file_size=settings.limits.max_upload_bytes,
        enable_monitoring=False,
        # The History tab is the one record of a visitor's runs, and its Clear button clears it all.
        run_history=False,
        show_error=False,
        state_session_capacity=quotas.sessions,
        app_kwargs={"middleware": [Middleware(Gatekeeper, quotas=quotas,
                                              max_upload_bytes=settings.limits.max_upload_bytes,
                                              upload_dir=gr.utils.get_upload_folder(), logins=logins,
                                              view=AppView(*gradio_patches.app_view(app)),
                                              # A public app chooses its root: the Host is the visitor's to write.
                                              share_url=_share_url_of(app) if is_public(settings) else None,
                                              # With --auth the page differs per user.
                                              cache_pages=not settings.auth)], "routes": routes,
                    **({"lifespan": mcp_lifespan(app, quotas.trust_forwarded, log_in=bool(settings.auth))}
                       if settings.mcp else {})},
        mcp_server=settings.mcp,
        i18n=i18n,
        css=CSS,
        head=HEAD,
        **overrides,
    )
    return app, ctx
