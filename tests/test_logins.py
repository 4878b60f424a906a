"""Issue 18, findings 3, 4 and 6: logins on a public app (`SPACE_ID` set) with --api, --api-auth, --auth and --mcp.

Wrong passwords get the back-off on every entrance (the page, the REST and A1111 routes, MCP), per client address
and per user, also when sent at once; a password is taken as typed, commas included; several users come from
repeated flags, lines of a variable or a file; the API schema and MCP need a login under --auth, and a logged-in
MCP client's calls work. Each test speaks from client addresses of its own (X-Forwarded-For is trusted in public
mode), so that one test's back-off does not reach the next.
"""

import asyncio
import base64
import concurrent.futures
import threading
import time

import httpx
import pytest
from gradio_http import stop_process

FREE = 5  # the public default of --login-free-attempts
PAGE_USERS = ["--auth", "alice:pa,ss", "--auth", "bob:x"]  # repeated flags
# KOLORS_API_AUTH: one user:password a line. Each test guesses the password of a user of its own: the back-off
# counts per user too.
API_USERS = "robot:sé,cret\ncarol:c,mallory:x\nvictor:v\nwendy:w\n"
FILE_USERS = "# more page users\ndave:d:a,v e\n"  # KOLORS_AUTH_FILE
REST_ROUTES = [("GET", "sdapi/v1/sd-models"), ("POST", "kolors/v1/generate"), ("GET", "controlnet/model_list"),
               ("POST", "sdapi/v1/txt2img")]
MCP_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
MCP_ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture(scope="module")
def url(start_app, tmp_path_factory):
    users = tmp_path_factory.mktemp("users") / "users.txt"
    users.write_text(FILE_USERS)
    env = {"SPACE_ID": "kolors/logins-test", "KOLORS_API_AUTH": API_USERS, "KOLORS_AUTH_FILE": str(users)}
    process, url, _log = start_app("--host", "127.0.0.1", "--api", "--mcp", *PAGE_USERS, env=env)
    yield url
    stop_process(process)


def basic(user: str, password: str) -> dict:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def rest(url: str, address: str, user: str, password: str, route=REST_ROUTES[0]) -> httpx.Response:
    method, path = route
    return httpx.request(method, url + path, headers={**basic(user, password), "x-forwarded-for": address},
                         json={"prompt": "x"} if method == "POST" else None, timeout=60)


def page_login(url: str, address: str, user: str, password: str, multipart: bool = False) -> httpx.Response:
    form = {"username": user, "password": password}
    files = {name: (None, value) for name, value in form.items()} if multipart else None  # as the page sends it
    return httpx.post(url + "login", data=None if multipart else form, files=files,
                      headers={"x-forwarded-for": address}, timeout=60)


def test_a_password_is_taken_as_typed_and_users_come_from_flags_lines_and_a_file(url):
    # --auth alice:pa,ss --auth bob:x, and dave from KOLORS_AUTH_FILE: the page's users.
    assert page_login(url, "10.0.1.1", "alice", "pa,ss").status_code == 200
    assert page_login(url, "10.0.1.2", "alice", "pa").status_code == 400  # the prefix before the comma is not it
    assert page_login(url, "10.0.1.3", "bob", "x").status_code == 200
    assert page_login(url, "10.0.1.4", "dave", "d:a,v e", multipart=True).status_code == 200
    # KOLORS_API_AUTH lines: the REST users, passwords as typed (a comma, a colon, a non-ASCII letter).
    assert rest(url, "10.0.1.5", "robot", "sé,cret").status_code == 200
    refused = rest(url, "10.0.1.6", "robot", "sé")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert rest(url, "10.0.1.7", "carol", "c,mallory:x").status_code == 200
    assert rest(url, "10.0.1.8", "mallory", "x").status_code == 401  # no user slipped in after the comma
    assert rest(url, "10.0.1.9", "alice", "pa,ss").status_code == 401  # --api-auth's users, not the page's


def test_rest_password_guesses_get_429_after_the_free_attempts(url):
    answers, started = [], time.monotonic()
    with httpx.Client(timeout=60) as client:
        for index in range(300):
            method, path = REST_ROUTES[index % len(REST_ROUTES)]
            answers.append(client.request(method, url + path, json={"prompt": "x"} if method == "POST" else None,
                                          headers={**basic("victor", f"guess{index}"), "x-forwarded-for": "10.0.2.1"}))
    elapsed = time.monotonic() - started
    codes = [answer.status_code for answer in answers]
    checked = codes.count(401)
    assert codes[:FREE] == [401] * FREE and codes[FREE] == 429 and set(codes) == {401, 429}, codes[:10]
    assert checked <= FREE + 1 + int(elapsed).bit_length(), (checked, elapsed)
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1 and "Too many wrong passwords" in refused.text
    print(f"300 wrong REST passwords from one address in {elapsed:.2f} s ({300 / elapsed:.0f} answered/s): "
          f"{checked} checked ({checked / elapsed:.1f} guesses/s), {codes.count(429)} refused with 429")
    # The same address may not guess another user's password either, nor log in until the back-off has passed.
    assert rest(url, "10.0.2.1", "carol", "c,mallory:x").status_code == 429


def test_guesses_spread_over_addresses_are_counted_per_user(url):
    assert rest(url, "10.0.3.1", "carol", "c,mallory:x").status_code == 200  # carol's own address
    started = time.monotonic()
    codes = [rest(url, f"10.1.{index // 250}.{index % 250}", "carol", f"guess{index}").status_code
             for index in range(100)]
    elapsed = time.monotonic() - started
    assert codes[:FREE] == [401] * FREE and codes[FREE] == 429, codes[:10]
    assert codes.count(401) <= FREE + 1 + int(elapsed).bit_length(), (codes.count(401), elapsed)
    print(f"100 guesses of carol's password from 100 addresses: {codes.count(401)} checked")
    # A new address waits for carol's back-off; where carol logged in before, she still gets in.
    assert rest(url, "10.0.3.2", "carol", "c,mallory:x").status_code == 429
    assert rest(url, "10.0.3.1", "carol", "c,mallory:x").status_code == 200


def test_wrong_passwords_sent_at_once_are_checked_at_most_as_often_as_allowed(url):
    def at_once(attempt, count: int = 60) -> tuple[list[int], float]:
        barrier = threading.Barrier(count)

        def one(index: int) -> int:
            barrier.wait(timeout=60)
            return attempt(index).status_code

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            return list(pool.map(one, range(count))), time.monotonic() - started

    def allowed(elapsed: float) -> int:  # the free attempts, then one each time the doubling wait has passed
        return FREE + 1 + int(elapsed).bit_length()

    page, elapsed = at_once(lambda index: page_login(url, "10.0.4.1", "bob", f"guess{index}",
                                                     multipart=index % 2 == 1))
    assert sorted(set(page)) == [400, 429] and page.count(400) <= allowed(elapsed), (page, elapsed)
    api, elapsed = at_once(lambda index: rest(url, "10.0.4.2", "wendy", f"guess{index}", REST_ROUTES[index % 4]))
    assert sorted(set(api)) == [401, 429] and api.count(401) <= allowed(elapsed), (api, elapsed)
    print(f"60 wrong page logins at once: {page.count(400)} checked; 60 REST: {api.count(401)} checked")


def test_the_api_schema_and_mcp_need_a_login(url):
    mcp = url + "gradio_api/mcp/"
    for path in ("openapi.json", "docs", "redoc"):
        refused = httpx.get(url + path, headers={"x-forwarded-for": "10.0.5.1"}, timeout=30)
        assert refused.status_code == 401 and "sdapi" not in refused.text, path
    refused = httpx.post(mcp, json=MCP_LIST, headers={**MCP_ACCEPT, "x-forwarded-for": "10.0.5.1"}, timeout=30)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    # A REST user's HTTP Basic credentials, or the page's login cookie.
    schema = httpx.get(url + "openapi.json", headers={**basic("robot", "sé,cret"), "x-forwarded-for": "10.0.5.2"})
    assert schema.status_code == 200 and "/sdapi/v1/txt2img" in schema.json()["paths"]
    with httpx.Client(base_url=url, headers={"x-forwarded-for": "10.0.5.3"}, timeout=30) as browser:
        assert browser.post("login", data={"username": "alice", "password": "pa,ss"}).status_code == 200
        assert browser.get("openapi.json").status_code == 200
        listed = browser.post("gradio_api/mcp/", json=MCP_LIST, headers=MCP_ACCEPT)
        assert listed.status_code == 200 and "text_to_image" in listed.text
    tools = session_call(mcp, {**basic("robot", "sé,cret"), "x-forwarded-for": "10.0.5.4"},
                         lambda session: session.list_tools())
    assert any(tool.name.endswith("text_to_image") for tool in tools.tools)  # on a Space: <space name>_text_to_image
    # Wrong passwords at the MCP endpoint count like any others.
    codes = [httpx.post(mcp, json=MCP_LIST, timeout=30, headers={**MCP_ACCEPT, **basic("mcp-guesser", f"{index}"),
                                                                 "x-forwarded-for": "10.0.5.5"}).status_code
             for index in range(FREE + 1)]
    assert codes == [401] * FREE + [429], codes


def test_an_mcp_tool_call_works_with_a_login(url):
    arguments = {"prompt": "一只红色的狐狸, a red fox", "width": 256, "height": 256, "num_inference_steps": 2,
                 "seed": 5}

    async def generate(session):
        name = next(tool.name for tool in (await session.list_tools()).tools if tool.name.endswith("text_to_image"))
        return await session.call_tool(name, arguments)

    result = session_call(url + "gradio_api/mcp/", {**basic("robot", "sé,cret"), "x-forwarded-for": "10.0.6.1"},
                          generate)
    assert not result.isError, result
    assert [item.mimeType for item in result.content if item.type == "image"] == ["image/png"]


def session_call(url: str, headers: dict, action):
    """Run `action(session)` in an MCP client session over streamable HTTP, sending `headers`."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def run():
        async with streamablehttp_client(url, headers=headers) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await action(session)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # its own event loop, whatever this thread runs
        return pool.submit(asyncio.run, run()).result()
