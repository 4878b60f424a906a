"""The MCP server (`--mcp`) through the `mcp` client library: tools listed with docs, an image made, a bad value."""

import asyncio
import concurrent.futures
import base64
import dataclasses
import io
import json
import re

import pytest
from gradio_http import free_port
from PIL import Image

from kolors_app.metadata.png_chunks import read_image_parameters


@pytest.fixture(scope="module")
def mcp_url(settings, manager, tmp_path_factory):
    from kolors_app.launch import launch

    folder = tmp_path_factory.mktemp("mcp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        app_settings = dataclasses.replace(settings, port=free_port(), mcp=True)
        app, _ctx = launch(app_settings, manager, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{app_settings.port}/gradio_api/mcp/"
        finally:
            app.close()


def session_call(url: str, action):
    """Run `action(session)` in an MCP client session over streamable HTTP."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def run():
        async with streamablehttp_client(url) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await action(session)

    # In its own thread: an earlier test (playwright's sync API) may leave an event loop running in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_tools_are_the_generate_actions_with_docs_for_agents(mcp_url):
    tools = {tool.name: tool for tool in session_call(mcp_url, lambda s: s.list_tools()).tools}
    assert set(tools) == {"text_to_image", "image_to_image", "ip_adapter", "inpaint"}
    t2i = tools["text_to_image"]
    assert "Chinese or English" in t2i.description and "multiples of 8" in t2i.description
    properties = t2i.inputSchema["properties"]
    assert "一张瓢虫的照片" in properties["prompt"]["description"]
    assert "-1 for a random seed" in properties["seed"]["description"]
    assert t2i.inputSchema.get("required", []) == ["prompt"]
    assert "reference" in tools["ip_adapter"].inputSchema["properties"]["ip_adapter_image"]["description"]
    assert "white = repaint" in tools["inpaint"].inputSchema["properties"]["mask"]["description"]
    for tool in tools.values():  # every tool tells an agent what the model is good at and its limits
        assert "bilingual" in tool.description and "multiples of 8" in tool.description, tool.name


def test_generate_an_image_answered_as_image_content(mcp_url):
    arguments = {"prompt": "一只红色的狐狸, a red fox", "width": 256, "height": 256, "num_inference_steps": 2,
                 "seed": 5, "num_images": 2}
    result = session_call(mcp_url, lambda s: s.call_tool("text_to_image", arguments))
    assert not result.isError, result
    images = [item for item in result.content if item.type == "image"]
    assert len(images) == 2 and images[0].mimeType == "image/png"
    image = Image.open(io.BytesIO(base64.b64decode(images[0].data)))
    assert image.size == (256, 256)
    summary = json.loads(next(item.text for item in result.content if item.type == "text" and '"images"' in item.text))
    assert [p["seed"] for p in summary["images"]] == [5, 6]
    assert read_image_parameters(image).parameters["prompt"] == "一只红色的狐狸, a red fox"
    # Each image's URL names it inside the cache folder, not by the server's path (issue 18).
    urls = [item.text for item in result.content if item.type == "text" and item.text.startswith("Image URL:")]
    assert len(urls) == 2 and all(re.search(r"/gradio_api/file=[0-9a-f]{40}/[^/]+\.png$", url) for url in urls), urls


def test_a_bad_value_is_a_clear_error_naming_the_parameter(mcp_url):
    arguments = {"prompt": "a fox", "width": 1001, "height": 256, "num_inference_steps": 2}
    result = session_call(mcp_url, lambda s: s.call_tool("text_to_image", arguments))
    assert result.isError
    text = " ".join(item.text for item in result.content if item.type == "text")
    assert "width: must be a multiple of 8" in text, text
