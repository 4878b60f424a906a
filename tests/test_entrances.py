"""Every entrance goes through the one job engine: the budget findings through the entrance where each was found,
jobs owned by their caller, a second MCP client served, and runs that stop when their client goes away.

The app runs with --api, --mcp, two API users and the public budget (300 megapixel-steps, 16 output megapixels),
one job per session and per address, behind a proxy (each client's X-Forwarded-For is its address).
"""

import asyncio
import base64
import concurrent.futures
import dataclasses
import io
import json
import socket
import threading
import time

import gradio as gr
import httpx
import pytest
import webuiapi
from gradio_http import free_port, wait_until
from PIL import Image
from ui_handlers import FakeProgress, handler

from kolors_app.core.logins import Login
from kolors_app.engine import worker
from kolors_app.serving.quotas import DEFAULTS

PUBLIC_WORK, PUBLIC_OUTPUT = DEFAULTS["max_work"][1], DEFAULTS["max_output_mp"][1]
ALICE, BOB = ("alice", "pw-a"), ("bob", "pw-b")
ALICE_KEY = "sk-alice-key-1"
LONG = dict(width=256, height=256, steps=150)


@pytest.fixture(scope="module")
def app(settings, manager, tmp_path_factory):
    """(base URL, app, ctx) of the app served in this process."""
    from kolors_app.launch import launch

    folder = tmp_path_factory.mktemp("entrances")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        own = dataclasses.replace(settings, port=free_port(), api=True, mcp=True,
                                  api_auth=(Login(*ALICE), Login(*BOB)), api_key=(ALICE_KEY,),
                                  max_work=PUBLIC_WORK, max_output_mp=PUBLIC_OUTPUT, queue_per_session=1,
                                  queue_per_address=1, behind_proxy=True)
        blocks, ctx = launch(own, manager, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{own.port}", blocks, ctx
        finally:
            blocks.close()


@pytest.fixture
def stops(monkeypatch) -> list:
    """When each job's stop reached its worker."""
    at = []
    original = worker.StopFlags.stop

    def recorded(self):
        at.append(time.monotonic())
        original(self)

    monkeypatch.setattr(worker.StopFlags, "stop", recorded)
    return at


def running(ctx) -> bool:
    return any(handle.state == "running" and handle.step >= 1 for handle in list(ctx.engine._jobs))


def idle(ctx) -> bool:
    return ctx.engine.queued() == 0 and not ctx.manager.run_lock.locked()


def post(url: str, path: str, body: dict, user=ALICE, address="10.1.0.1", timeout: float = 60) -> httpx.Response:
    return httpx.post(url + path, json=body, auth=user, headers={"X-Forwarded-For": address}, timeout=timeout)


# --- the budget, through the entrance where each escape was found ---

def test_the_page_counts_the_hires_pass(app):
    _url, blocks, _ctx = app
    run = handler(blocks, "creative-generate", "click")
    base = ("a fox", "", [], 0.8, [], 1, 150, 5.0, "Euler", 1024, 1024)
    with pytest.raises(gr.Error, match=r"hires_steps: this job is 420 megapixel-steps .* at most 300 allowed"):
        list(run(*base, True, 2.0, "Latent", 0, 0.45, request=None, progress=FakeProgress()))


def test_a1111_counts_every_iteration(app):
    url, _blocks, ctx = app
    body = {"prompt": "a fox", "width": 1024, "height": 1024, "steps": 71, "n_iter": 8}
    answer = post(url, "/sdapi/v1/txt2img", body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "n_iter" and answer.json()["code"] == "over_budget"
    assert answer.json()["allowed"] == {"max": PUBLIC_WORK}
    assert idle(ctx)


def test_a_16x16x16_plot_is_refused_before_it_runs(app):
    _url, blocks, ctx = app
    plot = handler(blocks, "creative-run-plot", "click")
    base = ("a fox", "", [], 0.8, [], 1, 1, 5.0, "Euler", 256, 256)
    with pytest.raises(gr.Error, match=r"x_values: this job is 10,368 megapixel-steps .* at most 300 allowed"):
        list(plot(*base, False, 1.5, "Latent", 0, 0.45, "seed", "1-16", "guidance", "1-16", "steps", "1-16 [16]",
                  request=None, progress=FakeProgress()))
    assert idle(ctx)


def test_a_4x_upscale_of_a_16_megapixel_image_is_refused(app):
    _url, blocks, ctx = app
    upscale = handler(blocks, "creative-upscale-run", "click")
    started = time.monotonic()
    with pytest.raises(gr.Error, match="upscale_factor: this job makes 244.1 megapixels of images; at most 16"):
        upscale(Image.new("RGB", (4000, 4000)), "Lanczos", 4.0, None)
    assert time.monotonic() - started < 5 and idle(ctx)


def test_a_2048px_batch_of_8_is_over_the_output_cap(app):
    url, _blocks, _ctx = app
    body = {"prompt": "a fox", "width": 2048, "height": 2048, "num_inference_steps": 1, "num_images": 8}
    answer = post(url, "/kolors/v1/generate", body)
    assert answer.status_code == 422, answer.text
    refusal = answer.json()
    assert (refusal["field"], refusal["code"], refusal["allowed"]) == ("num_images", "over_output_cap",
                                                                       {"max": PUBLIC_OUTPUT})


# --- owners ---

def test_api_users_neither_see_nor_stop_each_others_jobs(app):
    url, _blocks, ctx = app
    alice = webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1", sampler="Euler")
    alice.set_auth(*ALICE)
    done = {}
    thread = threading.Thread(target=lambda: done.update(result=alice.txt2img(prompt="alice's fox", seed=3,
                                                                             **LONG)))
    thread.start()
    assert wait_until(lambda: running(ctx), timeout=60), "alice's job did not start"
    mine = httpx.get(f"{url}/sdapi/v1/progress", auth=ALICE, timeout=30).json()
    theirs = httpx.get(f"{url}/sdapi/v1/progress", auth=BOB, timeout=30).json()
    assert mine["state"]["job_count"] == 1 and mine["state"]["sampling_steps"] == 150
    assert theirs["state"]["job_count"] == 0 and theirs["current_image"] is None and theirs["progress"] == 0
    assert httpx.post(f"{url}/sdapi/v1/interrupt", auth=BOB, timeout=30).status_code == 200
    assert httpx.post(f"{url}/sdapi/v1/skip", auth=BOB, timeout=30).status_code == 200
    thread.join(300)
    result = done["result"]
    assert not result.info["interrupted"] and len(result.images) == 1 and result.images[0].size == (256, 256)


def mcp_session(url: str, address: str, action):
    """Run `action(session)` in an MCP client session from `address` (its proxy's X-Forwarded-For)."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def run():
        async with streamablehttp_client(url, headers={"X-Forwarded-For": address}) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await action(session)

    return asyncio.run(run())


def test_a_second_mcp_client_is_served(app):
    url, _blocks, ctx = app
    mcp_url = f"{url}/gradio_api/mcp/"
    arguments = {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 40, "seed": 2}

    def call(address: str):
        return mcp_session(mcp_url, address, lambda session: session.call_tool("text_to_image", arguments))

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(call, "10.2.0.1")
        assert wait_until(lambda: running(ctx), timeout=60), "the first MCP call did not start"
        second = pool.submit(call, "10.2.0.2")
        results = [first.result(timeout=300), second.result(timeout=300)]
    for result in results:
        assert not result.isError, result
        assert [item.type for item in result.content].count("image") == 1


# --- a client that goes away stops its job ---

def assert_stopped_soon(ctx, stops: list, gone: float) -> None:
    assert wait_until(lambda: stops, timeout=15), "the job was not stopped after its client left"
    assert stops[0] >= gone - 0.5
    assert wait_until(lambda: idle(ctx), timeout=30), "the worker still runs 30 s after its client left"


@pytest.mark.parametrize("path, body", [
    ("/kolors/v1/generate", {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 150}),
    ("/sdapi/v1/txt2img", {"prompt": "a fox", **LONG}),
    ("/v1/images/generations", {"prompt": "a fox", "size": "256x256", "num_inference_steps": 150}),
], ids=["rest", "a1111", "openai"])
def test_a_rest_client_that_leaves_stops_its_job(app, stops, path, body):
    url, _blocks, ctx = app
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    credentials = (f"Bearer {ALICE_KEY}" if path.startswith("/v1/")
                   else "Basic " + base64.b64encode(b"alice:pw-a").decode())
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                           f"Authorization: {credentials}\r\nX-Forwarded-For: 10.3.0.1\r\n"
                           f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        assert wait_until(lambda: running(ctx), timeout=60), "the job did not start"
        gone = time.monotonic()
    # The connection is closed: the client gave up while the answer was being made.
    assert_stopped_soon(ctx, stops, gone)


def test_an_mcp_client_that_leaves_stops_its_job(app, stops):
    url, _blocks, ctx = app
    arguments = {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 150, "seed": 2}
    gone = {}

    async def call_then_leave(session):
        call = asyncio.ensure_future(session.call_tool("text_to_image", arguments))
        while not running(ctx):
            await asyncio.sleep(0.05)
        gone["at"] = time.monotonic()
        call.cancel()  # then the session closes: the client is gone

    mcp_session(f"{url}/gradio_api/mcp/", "10.4.0.1", call_then_leave)
    assert_stopped_soon(ctx, stops, gone["at"])


def test_a_plot_whose_page_is_gone_stops(app, stops):
    _url, blocks, ctx = app
    plot = handler(blocks, "creative-run-plot", "click")
    base = ("a fox", "", [], 0.8, [], 1, 30, 5.0, "Euler", 256, 256)
    running_plot = plot(*base, False, 1.5, "Latent", 0, 0.45, "seed", "1-4", "none", "", "none", "",
                        request=None, progress=FakeProgress())
    assert next(running_plot) == (gr.skip(), gr.skip())  # the first step of the first cell
    gone = time.monotonic()
    running_plot.close()  # what gradio does when the visitor's page is gone
    assert_stopped_soon(ctx, stops, gone)


def test_the_answers_still_come_after_all_that(app):
    url, _blocks, _ctx = app
    answer = post(url, "/kolors/v1/generate", {"prompt": "still here", "width": 256, "height": 256,
                                               "num_inference_steps": 2, "seed": 4})
    assert answer.status_code == 200, answer.text
    image = answer.json()["images"][0]
    assert Image.open(io.BytesIO(base64.b64decode(image))).size == (256, 256)
