"""Issue 18, findings 5 and 6 against a public app (`SPACE_ID` set, listening on loopback): GET floods, gradio's
protocol (unknown events, second streams, cancels), cross-site uploads, the root, server paths, deep JSON.

Behind a proxy (as on a Space) X-Forwarded-For gives each simulated visitor its own address.
"""

import base64
import http.client
import statistics
import threading
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from gradio_http import PATH_LIKE, Raw, small, stop_process
from image_bytes import RED, encoded
from PIL import Image, PngImagePlugin

FLOOD_CONNECTIONS = 16
FLOOD_SECONDS_MAX = 60
# Stated bound: a flood of 16 connections makes another visitor at most 2x slower; asserted generously (3x and
# 0.5 s more), as the flooding client shares this 2-core machine with the server.
SLOWDOWN_BOUND = 3.0
API_USER = ("program", "its-password")  # a public app's REST routes need --api-auth
DEEP = "[" * 1500 + "]" * 1500
REST_ROUTES = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/png-info", "/sdapi/v1/options",
               "/kolors/v1/generate")


class Visitor(Raw):
    """Raw with its own client address (X-Forwarded-For)."""

    def __init__(self, url: str, address: str):
        self.url, self.address = url.rstrip("/"), address
        config = httpx.get(f"{self.url}/config", timeout=30, headers=self.headers).json()
        self.fn = {dep["api_name"]: dep["id"] for dep in config["dependencies"] if dep.get("api_name")}

    @property
    def headers(self) -> dict:
        return {"x-forwarded-for": self.address}

    def join(self, api_name, data, session, timeout=60):
        return httpx.post(f"{self.url}/gradio_api/queue/join", timeout=timeout, headers=self.headers,
                          json={"data": data, "fn_index": self.fn[api_name], "session_hash": session})

    def get(self, path: str, **options) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, headers={**self.headers, **options.pop("headers", {})},
                         **options)


@pytest.fixture(scope="module")
def app(start_app):
    process, url, log = start_app("--api", "--api-auth", ":".join(API_USER), "--host", "127.0.0.1",
                                  env={"SPACE_ID": "someone/kolors-test"})
    yield url.rstrip("/"), log.parent
    stop_process(process)


def timed(action) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def flood(url: str, address: str, stop: threading.Event, statuses: list) -> None:
    """GET /config again and again on one kept-alive connection, as fast as the answers come."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    deadline = time.monotonic() + FLOOD_SECONDS_MAX
    while not stop.is_set() and time.monotonic() < deadline:
        connection.request("GET", "/config", headers={"x-forwarded-for": address})
        response = connection.getresponse()
        response.read()
        statuses.append((response.status, response.getheader("retry-after")))
    connection.close()


def test_a_get_flood_from_one_address_slows_no_one_else(app):
    url, _home = app
    visitor = Visitor(url, "10.8.0.1")
    assert visitor.queued("text_to_image", small(num_inference_steps=1))["success"]  # warm: model loaded

    keep_alive = httpx.Client(headers=visitor.headers, timeout=30)

    def measure() -> tuple[float, float]:
        config = statistics.median(timed(lambda: keep_alive.get(url + "/config").raise_for_status())
                                   for _ in range(5))
        run = timed(lambda: visitor.queued("text_to_image", small()))
        return config, run

    config_alone, run_alone = measure()
    stop, statuses = threading.Event(), []
    flooders = [threading.Thread(target=flood, args=(url, "10.8.0.66", stop, statuses))
                for _ in range(FLOOD_CONNECTIONS)]
    for thread in flooders:
        thread.start()
    try:
        deadline = time.monotonic() + FLOOD_SECONDS_MAX / 2
        while sum(1 for status, _ in statuses if status == 429) < FLOOD_CONNECTIONS:  # past the burst
            assert time.monotonic() < deadline, f"the flood was never refused ({len(statuses)} GETs)"
            time.sleep(0.05)
        config_flooded, run_flooded = measure()
    finally:
        stop.set()
        for thread in flooders:
            thread.join()
        keep_alive.close()
    refused = [retry for status, retry in statuses if status == 429]
    print(f"/config {config_alone * 1000:.0f} ms alone, {config_flooded * 1000:.0f} ms beside {FLOOD_CONNECTIONS} "
          f"flooding connections; a small run {run_alone:.2f} s alone, {run_flooded:.2f} s beside them; the flood "
          f"sent {len(statuses)} GETs, {len(refused)} refused")
    assert refused and all(retry and int(retry) >= 1 for retry in refused)
    assert config_flooded < SLOWDOWN_BOUND * config_alone + 0.5
    assert run_flooded < SLOWDOWN_BOUND * run_alone + 0.5


def test_a_page_load_and_a_progress_poller_stay_under_the_limit(app):
    url, _home = app
    visitor = Visitor(url, "10.8.0.2")
    # A page load: chromium makes about 115 GETs at once (tests/browser/test_hostile.py counts them); twice that.
    paths = ["/", "/config", "/theme.css", "/gradio_api/info"] * 58
    with httpx.Client(headers=visitor.headers, timeout=30) as client:
        statuses = [client.get(url + path).status_code for path in paths]
        assert set(statuses) == {200}, statuses
        for _ in range(5):
            started = time.monotonic()
            assert client.get(url + "/sdapi/v1/progress", auth=API_USER).status_code == 200
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def test_deep_json_is_refused_naming_the_body_on_every_rest_route(app):
    url, _home = app
    for route in REST_ROUTES:
        answer = httpx.post(url + route, content=DEEP, headers={"content-type": "application/json",
                                                                "x-forwarded-for": "10.8.0.3"}, timeout=30,
                            auth=API_USER)
        assert answer.status_code == 422 and "body" in answer.text, (route, answer.status_code, answer.text[:200])
        assert "Traceback" not in answer.text and not PATH_LIKE.search(answer.text)
    joined = httpx.post(url + "/gradio_api/queue/join", content=DEEP, timeout=30,
                        headers={"content-type": "application/json", "x-forwarded-for": "10.8.0.3"})
    assert joined.status_code == 422 and joined.text.startswith("body:"), joined.text[:200]


def test_png_info_reads_an_odd_number_as_a_note_not_a_failure(app):
    url, _home = app
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", 'a fox\nSteps: 2, Seed: 1, Size: 256x256, Mode: inpaint, Mask blur: ², '
                                'ControlNet 0: "Module: depth, Weight: 0.5"')
    png = encoded(Image.new("RGB", (16, 16)), "PNG", pnginfo=info)
    answer = httpx.post(url + "/sdapi/v1/png-info", timeout=30, headers={"x-forwarded-for": "10.8.0.4"}, auth=API_USER,
                        json={"image": "data:image/png;base64," + base64.b64encode(png).decode()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["parameters"]["Mask blur"] == "²"
    # The PNG info tab reads them: the odd number and the unit without a model are left out, with a note each.
    visitor = Visitor(url, "10.8.0.4")
    session = uuid.uuid4().hex[:12]
    payload = {"path": httpx.post(url + "/gradio_api/upload", files={"files": ("odd.png", png)}, timeout=30,
                                  headers=visitor.headers).json()[0], "meta": {"_type": "gradio.FileData"}}
    joined = visitor.join("parameters_of", [payload], session)
    notes, message = [], None
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=60,
                      headers=visitor.headers) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and '"log"' in line:
                notes.append(line)
            if line.startswith("data:") and "process_completed" in line:
                message = line
                break
    assert joined.status_code == 200 and message and '"success":true' in message.replace(" ", ""), message
    assert '"mode":"inpaint"' in message.replace(" ", "") and "mask_blur" not in message
    assert "control_type" not in message
    assert any("Mask blur" in note for note in notes) and any("names no Model" in note for note in notes), notes


@pytest.mark.parametrize("route", ["/gradio_api/queue/join", "/gradio_api/run/predict"])
def test_unknown_events_and_empty_sessions_are_refused(app, route):
    url, _home = app
    visitor = Visitor(url, "10.8.0.5")
    known = visitor.fn["size_of_upload"]
    for body, field in (({"data": [None], "fn_index": 99999, "session_hash": "abc123"}, "fn_index"),
                        ({"data": [None], "fn_index": "7", "session_hash": "abc123"}, "fn_index"),
                        ({"data": [None], "fn_index": known, "session_hash": ""}, "session_hash"),
                        ({"data": [None], "fn_index": known}, "session_hash")):
        answer = httpx.post(url + route, json=body, headers=visitor.headers, timeout=30)
        assert answer.status_code == 422 and answer.text.startswith(field + ":"), (body, answer.text)
    unnamed = httpx.post(url + "/gradio_api/run/no_such_event", json={"data": [], "session_hash": "abc123"},
                         headers=visitor.headers, timeout=30)
    assert unnamed.status_code == 422 and unnamed.text.startswith("fn_index:"), unnamed.text


def open_stream(url: str, path: str, address: str, seen: list, opened: threading.Event) -> None:
    """Read a stream to its end, noting each data line; `opened` is set once the answer's head is in."""
    with httpx.stream("GET", url + path, headers={"x-forwarded-for": address}, timeout=60) as stream:
        seen.append(stream.status_code)
        opened.set()
        for line in stream.iter_lines():
            if line.startswith("data:"):
                seen.append(line)
                if '"process_completed"' in line:
                    return


def test_a_second_stream_cannot_take_over_a_session(app):
    url, _home = app
    victim, session = Visitor(url, "10.8.0.6"), uuid.uuid4().hex[:12]
    assert victim.join("text_to_image", small(num_inference_steps=4), session).status_code == 200
    messages, messages_open = [], threading.Event()
    reader = threading.Thread(target=open_stream, args=(url, f"/gradio_api/queue/data?session_hash={session}",
                                                        victim.address, messages, messages_open))
    with httpx.stream("GET", f"{url}/gradio_api/heartbeat/{session}", headers=victim.headers, timeout=60) as beat:
        assert beat.status_code == 200
        reader.start()
        assert messages_open.wait(30)
        for path in (f"/gradio_api/queue/data?session_hash={session}", f"/gradio_api/heartbeat/{session}"):
            # The attacker opens and drops a stream of the victim's session: refused at once.
            started = time.monotonic()
            with httpx.stream("GET", url + path, headers={"x-forwarded-for": "10.8.0.66"}, timeout=30) as stolen:
                assert stolen.status_code == 409, path
            assert time.monotonic() - started < 1.0
        reader.join(60)
    assert messages[0] == 200 and '"success":true' in messages[-1].replace(" ", ""), messages[-1][:300]


def test_cancel_needs_the_events_own_session(app):
    url, _home = app
    anonymous = httpx.post(url + "/gradio_api/cancel", json={"session_hash": "x1", "fn_index": 0, "event_id": "e1"},
                           headers={"x-forwarded-for": "10.8.0.7"}, timeout=30)
    assert anonymous.status_code == 404 and anonymous.text.startswith("event_id:"), anonymous.text
    visitor, session = Visitor(url, "10.8.0.8"), uuid.uuid4().hex[:12]
    joined = visitor.join("text_to_image", small(num_inference_steps=4), session)
    event = joined.json()["event_id"]
    fn = visitor.fn["text_to_image"]
    other = httpx.post(url + "/gradio_api/cancel", json={"session_hash": "another", "fn_index": fn,
                                                         "event_id": event}, headers={"x-forwarded-for": "10.8.0.9"})
    assert other.status_code == 404
    own = httpx.post(url + "/gradio_api/cancel", json={"session_hash": session, "fn_index": fn, "event_id": event},
                     headers=visitor.headers)
    assert own.status_code == 200, own.text
    visitor.follow(session, joined)


def test_uploads_from_another_site_are_refused(app):
    url, _home = app
    png = encoded(RED, "PNG")

    def upload(headers: dict) -> int:
        return httpx.post(url + "/gradio_api/upload", files={"files": ("red.png", png)}, timeout=30,
                          headers={"x-forwarded-for": "10.8.0.10", **headers}).status_code

    assert upload({"origin": "https://evil.example"}) == 403
    assert upload({"sec-fetch-site": "cross-site", "origin": url}) == 403
    assert upload({"sec-fetch-site": "same-site", "origin": "https://other.example"}) == 403
    assert upload({"origin": url}) == 200  # the page, in a browser without Sec-Fetch-Site
    assert upload({"sec-fetch-site": "same-origin", "origin": url}) == 200
    assert upload({}) == 200  # programs send no Origin


def test_the_root_is_not_taken_from_the_visitors_host(app):
    url, _home = app
    for headers in ({"host": "evil.example"}, {"x-forwarded-host": "evil.example"},
                    {"host": "evil.example", "x-forwarded-proto": "https"}):
        config = httpx.get(url + "/config", headers={"x-forwarded-for": "10.8.0.11", **headers}, timeout=30)
        root = config.json()["root"]
        # The scheme may follow a proxy on loopback (uvicorn trusts its X-Forwarded-Proto); the host never does.
        assert config.status_code == 200 and urlsplit(root).netloc == urlsplit(url).netloc, (headers, root)
        page = httpx.get(url + "/", headers={"x-forwarded-for": "10.8.0.11", **headers}, timeout=30)
        assert page.status_code == 200 and "evil.example" not in page.text


def test_program_answers_name_no_server_folder(app):
    url, home = app
    visitor = Visitor(url, "10.8.0.12")
    session = uuid.uuid4().hex[:12]
    message = visitor.follow(session, visitor.join("text_to_image", small(), session))
    assert message["success"], message
    text = str(message["output"])
    assert str(home) not in text and "/gradio/" not in text, text[:500]
    item = message["output"]["data"][0][0]["image"]
    assert "/" in item["path"] and not item["path"].startswith("/")
    answer = httpx.get(item["url"], timeout=30)
    assert answer.status_code == 200 and answer.content.startswith(b"\x89PNG")
    from gradio_client import Client

    gallery, _result = Client(url, verbose=False).predict(*small(), api_name="/text_to_image")
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (256, 256)
