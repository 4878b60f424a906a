"""gradio's patches: sessions without a copy of the page, skips passed through, one Gallery schema, the queue's door,
what the app's guard may ask of gradio, some events' outputs rewritten, the MCP server's answers and its internal
client's login, and the page's login cookie."""

from __future__ import annotations

import copy
import functools
import secrets
import threading
from collections.abc import Callable

import anyio
import gradio as gr
from gradio.blocks import BlocksConfig
from gradio.routes import App
from gradio.state_holder import SessionState
from gradio_client import Client
from starlette.requests import cookie_parser

from kolors_app.patches.versions import Touched

DISTRIBUTION = "gradio"
SKIP = gr.skip()
# The user name of the internal MCP client's login: no configured user has it (a user name ends at its first colon).
MCP_CLIENT_USER = ":mcp"
Jobs = list[tuple[str, object]]  # (session_hash, request) of each event waiting or running


@functools.cache
def _probe_blocks() -> gr.Blocks:
    """A queued Blocks with one event: its parts carry the instance attributes the patches read."""
    with gr.Blocks() as blocks:
        button = gr.Button()
        button.click(lambda: None, None, button)
    blocks.queue()
    return blocks


def _probe_function(_owner) -> object:
    return next(iter(_probe_blocks().fns.values()))


def _probe_queue(_owner) -> object:
    return _probe_blocks()._queue


def _probe_event(event_class) -> object:
    return event_class(None, _probe_function(None), None, None)


QUEUE = Touched("gradio.blocks:Blocks", "_queue", instance=lambda _: _probe_blocks())
TOUCHED = {
    "keep_no_input_values": (
        Touched("gradio.state_holder:SessionState", "__init__", parameters=("blocks",)),
        Touched("gradio.state_holder:SessionState", "_update_value_in_config", parameters=("key", "value")),
        Touched("gradio.blocks:BlocksConfig", "config_for_block", parameters=("_id", "rendered_ids", "block")),
    ),
    "pass_skips_through": (
        Touched("gradio.blocks:Blocks", "postprocess_data", parameters=("block_fn", "predictions", "state")),
        Touched("gradio.block_function:BlockFunction", "outputs", instance=_probe_function),
        Touched("gradio.block_function:BlockFunction", "batch", instance=_probe_function),
        Touched("gradio.blocks:Block", "stateful"),
    ),
    "build_gallery_schema_once": (Touched("gradio.components:Gallery", "api_info"),),
    "screen_queue_joins": (
        QUEUE,
        Touched("gradio.queueing:Queue", "push", parameters=("body", "request", "username")),
        Touched("gradio.queueing:Queue", "event_queue_per_concurrency_id", instance=_probe_queue),
        Touched("gradio.queueing:Queue", "active_jobs", instance=_probe_queue),
        Touched("gradio.queueing:EventQueue", "queue", instance=lambda event_queue: event_queue("probe", 1)),
        Touched("gradio.queueing:Event", "session_hash", instance=_probe_event),
        Touched("gradio.queueing:Event", "request", instance=_probe_event),
        Touched("gradio.data_classes", "PredictBodyInternal", parameters=("session_hash",)),
    ),
    "queue_length": (QUEUE, Touched("gradio.queueing:Queue", "__len__")),
    "app_view": (
        QUEUE,
        Touched("gradio.blocks:Blocks", "fns", instance=lambda _: _probe_blocks()),
        Touched("gradio.block_function:BlockFunction", "api_name", instance=_probe_function),
        Touched("gradio.queueing:Queue", "pending_event_ids_session", instance=_probe_queue),
    ),
    "rewrite_outputs": (
        Touched("gradio.blocks:Blocks", "postprocess_data", parameters=("block_fn", "predictions", "state")),
        Touched("gradio.block_function:BlockFunction", "api_name", instance=_probe_function),
    ),
    "answer_mcp_outputs_with": (
        Touched("gradio.blocks:Blocks", "mcp_server_obj", instance=lambda _: _probe_blocks()),
        Touched("gradio.mcp:GradioMCPServer", "postprocess_output_data", parameters=("data", "root_url")),
        Touched("gradio.mcp:GradioMCPServer", "types", extra="mcp"),
    ),
    "name_mcp_callers": (
        Touched("gradio.mcp:GradioMCPServer", "_prepare_tool_call_args", parameters=("name", "arguments")),
    ),
    "log_in_mcp_client": (
        Touched("gradio.routes:App", "tokens", instance=lambda app_class: app_class()),
        Touched("gradio.routes:App", "cookie_id", instance=lambda app_class: app_class()),
        Touched("gradio.mcp:GradioMCPServer", "_get_or_create_client", extra="mcp"),
        Touched("gradio.mcp:GradioMCPServer", "_client_instance", extra="mcp",
                instance=lambda server_class: server_class(_probe_blocks())),
        Touched("gradio.mcp:GradioMCPServer", "local_url", extra="mcp"),
        Touched("gradio.mcp:GradioMCPServer", "_prepare_tool_call_args", parameters=("name", "arguments")),
    ),
    "page_user": (
        Touched("gradio.routes:App", "tokens", instance=lambda app_class: app_class()),
        Touched("gradio.routes:App", "cookie_id", instance=lambda app_class: app_class()),
    ),
    "cancel_dropped_mcp_calls": (
        Touched("gradio.mcp:GradioMCPServer", "_execute_tool_with_progress", parameters=("job", "progress_token")),
        Touched("gradio.mcp:GradioMCPServer", "_execute_tool_without_progress", parameters=("job",)),
    ),
}


def apply() -> None:
    """The patches of gradio's classes (idempotent); the queue's and the MCP server's are per app."""
    keep_no_input_values()
    pass_skips_through()
    build_gallery_schema_once()


def keep_no_input_values() -> None:
    """Stop gradio from keeping every block's config and every input's last value per session (for deep links,
    which are off).

    With 10,000 sessions kept, 20 requests of 50 MB each stayed in memory for good. And copying the config of
    all ~600 blocks cost each new session 60-110 ms on the event loop: every program request with a new session
    waited that long before it was queued, and a flood of new sessions could keep the loop busy.
    """
    if getattr(SessionState, "kolors_patched", False):
        return
    start_session, config_for_block = SessionState.__init__, BlocksConfig.config_for_block
    keep_value = SessionState._update_value_in_config
    starting = threading.local()

    def new_session(self, blocks):
        starting.active = True
        try:
            start_session(self, blocks)
        finally:
            starting.active = False

    def block_config(*args, **kwargs):
        return {} if getattr(starting, "active", False) else config_for_block(*args, **kwargs)

    def keep_no_value(self, key, value):
        return None

    # __wrapped__: gradio's own, for the tests, and the signature the name check reads.
    new_session.__wrapped__, block_config.__wrapped__, keep_no_value.__wrapped__ = \
        start_session, config_for_block, keep_value
    SessionState.__init__, BlocksConfig.config_for_block = new_session, staticmethod(block_config)
    SessionState._update_value_in_config = keep_no_value
    SessionState.kolors_patched = True


def pass_skips_through() -> None:
    """Let gradio pass a gr.skip() on to the page without building that output component anew.

    For every gr.skip() an event returns, gradio 6.31 constructs the output component again and recomputes its
    config (inspect.signature, a random id, ...): two thirds of the cost of the page's progress updates
    (bench/README.md). A skip changes nothing, so the other outputs are postprocessed alone and the skips are
    answered as gradio answers them.
    """
    postprocess = gr.Blocks.postprocess_data
    if getattr(postprocess, "passes_skips", False):
        return

    async def postprocess_data(self, block_fn, predictions, state):
        outputs = list(block_fn.outputs)
        if block_fn.batch or not isinstance(predictions, (list, tuple)) or len(outputs) < 2 \
                or len(predictions) != len(outputs):  # gradio itself answers a wrong count
            return await postprocess(self, block_fn, predictions, state)
        kept = [index for index, (value, block) in enumerate(zip(predictions, outputs))
                if block.stateful or value != SKIP]
        if len(kept) == len(outputs):
            return await postprocess(self, block_fn, predictions, state)
        answer = [dict(SKIP) for _ in outputs]
        if kept:
            narrowed = copy.copy(block_fn)
            narrowed.outputs = [outputs[index] for index in kept]
            values = [predictions[index] for index in kept]
            done = await postprocess(self, narrowed, values if len(kept) > 1 else values[0], state)
            for index, value in zip(kept, done):
                answer[index] = value
        return answer

    postprocess_data.passes_skips, postprocess_data.__wrapped__ = True, postprocess
    gr.Blocks.postprocess_data = postprocess_data


def build_gallery_schema_once() -> None:
    """Make gr.Gallery build its API schema once per process instead of once per update.

    A streaming event builds each output component anew for every gr.skip() it yields, and building the
    Gallery's pydantic schema (the same for every Gallery) was 14 of the 15 ms of a progress update
    (bench/api.py). A subclass would do it too, but gradio writes a .pyi file beside any module that
    defines a component class.
    """
    build = gr.Gallery.api_info
    if getattr(build, "built_once", False):
        return
    schema: dict = {}

    def api_info(self) -> dict:
        if not schema:
            schema.update(build(self))
        return dict(schema)

    api_info.built_once, api_info.__wrapped__ = True, build
    gr.Gallery.api_info = api_info


def screen_queue_joins(app: gr.Blocks, refusal: Callable[[Jobs, str, object], str | None]) -> None:
    """Let `refusal(jobs, session_hash, request)` turn a job away before the app's queue takes it.

    `jobs` are the (session_hash, request) of the events waiting or running; a refusal is answered as a full queue.
    """
    queue = app._queue
    push = queue.push

    def jobs() -> Jobs:
        events = [event for event_queue in list(queue.event_queue_per_concurrency_id.values())
                  for event in list(event_queue.queue)]
        events += [event for batch in list(queue.active_jobs or []) if batch for event in batch]
        return [(event.session_hash, event.request) for event in events]

    async def screened_push(body, request, username):
        refused = refusal(jobs(), body.session_hash, request)
        if refused:
            return False, refused, "queue_full"
        return await push(body, request, username)

    queue.push = screened_push


def queue_length(app: gr.Blocks) -> int:
    """How many events wait in the app's queue."""
    return len(app._queue)


def app_view(app: gr.Blocks) -> tuple[Callable[[int], bool], Callable[[str], bool], Callable[[str, str], bool]]:
    """(is this an event's fn_index, is this an event's api_name, is this event waiting or running in this session)."""
    queue = app._queue

    def api_known(name: str) -> bool:
        return any(fn.api_name == name for fn in list(app.fns.values()))

    def event_in_session(session_hash: str, event_id: str) -> bool:
        return event_id in queue.pending_event_ids_session.get(session_hash, ())

    return (lambda index: index in app.fns), api_known, event_in_session


def rewrite_outputs(app: gr.Blocks, api_names: set[str], rewrite: Callable[[list], list]) -> None:
    """Pass the serialized outputs of the events named `api_names` through `rewrite` before they are sent."""
    postprocess = app.postprocess_data  # the class's (with skips passed through), bound to this app

    async def postprocess_data(block_fn, predictions, state):
        outputs = await postprocess(block_fn, predictions, state)
        return rewrite(outputs) if block_fn.api_name in api_names else outputs

    app.postprocess_data = postprocess_data


def answer_mcp_outputs_with(app: gr.Blocks, convert: Callable) -> None:
    """Have the app's MCP server (built at launch) answer with `convert(types, data, root_url, gradios_own)`.

    `types` is the mcp package's types module; `gradios_own(data, root_url)` is gradio's answer.
    """
    server = app.mcp_server_obj
    if server is None:
        return
    gradios_own = server.postprocess_output_data
    server.postprocess_output_data = lambda data, root_url: convert(server.types, data, root_url, gradios_own)


def name_mcp_callers(app: gr.Blocks, header_for: Callable[[object], tuple[str, str]]) -> None:
    """Add `header_for(mcp_request)` (a name and a value) to each MCP tool call's internal request.

    gradio runs every MCP call through one internal client: one session, from loopback, whoever called.
    """
    server = app.mcp_server_obj
    if server is None:
        return
    prepare = server._prepare_tool_call_args

    def prepare_with_header(name, arguments):
        endpoint, args, headers, block_fn = prepare(name, arguments)
        key, value = header_for(server.mcp_server.request_context.request)
        headers[key] = value
        return endpoint, args, headers, block_fn

    server._prepare_tool_call_args = prepare_with_header


def cancel_dropped_mcp_calls(app: gr.Blocks) -> None:
    """Cancel gradio's internal job when its MCP call is cancelled (the client's notifications/cancelled, or its
    session closed); gradio leaves that job running to its end."""
    server = app.mcp_server_obj
    if server is None:
        return
    with_progress = server._execute_tool_with_progress

    async def cancel(job) -> None:
        if not job.done():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(job.cancel)

    async def progressing(job, progress_token):
        try:
            return await with_progress(job, progress_token)
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


def log_in_mcp_client(app: gr.Blocks, server_app) -> None:
    """Log the internal client of the app's MCP server in, with a login token of its own in this process.

    Under auth= gradio gives that client no credentials, so every MCP call failed. Its callers log in at the MCP
    endpoint (kolors_app/serving/http_guard.py); their own credentials are not passed on to the internal calls.
    """
    server = app.mcp_server_obj
    if server is None:
        return
    token = secrets.token_urlsafe(32)
    server_app.tokens[token] = MCP_CLIENT_USER
    cookies = {f"access-token-unsecure-{server_app.cookie_id}": token}

    def logged_in_client() -> Client:
        if server._client_instance is None:
            if server.local_url is None:
                raise RuntimeError("the MCP server's app has no local URL: it is not launched")
            # gradio's own arguments (GradioMCPServer._get_or_create_client), and the login cookie.
            server._client_instance = Client(server.local_url, download_files=False, verbose=False,
                                             analytics_enabled=False, ssl_verify=False, _skip_components=False,
                                             headers={"x-gradio-user": "mcp"}, httpx_kwargs={"cookies": cookies})
        return server._client_instance

    prepare = server._prepare_tool_call_args

    def prepare_without_credentials(name, arguments):
        endpoint, args, headers, block_fn = prepare(name, arguments)
        for key in [key for key in headers if key.lower() in ("authorization", "cookie")]:
            del headers[key]  # a caller's cookie would replace the client's own
        return endpoint, args, headers, block_fn

    server._get_or_create_client, server._prepare_tool_call_args = logged_in_client, prepare_without_credentials


def page_user(scope) -> str | None:
    """The user logged in on the page, from the login cookie of this request to the app; None without one."""
    server_app = scope.get("app")
    if not isinstance(server_app, App):
        return None
    cookies = cookie_parser(next((value.decode("latin-1") for key, value in scope.get("headers", ())
                                  if key == b"cookie"), ""))
    token = cookies.get(f"access-token-{server_app.cookie_id}") or \
        cookies.get(f"access-token-unsecure-{server_app.cookie_id}")
    return server_app.tokens.get(token) if token else None
