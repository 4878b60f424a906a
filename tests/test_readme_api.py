"""The README's API examples run as they are written, against the app started with --api and --mcp."""

import json
import os
import re
from pathlib import Path

import pytest
from gradio_http import stop_process

ROOT = Path(__file__).resolve().parent.parent


def api_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text[text.index("## API\n"):text.index("## Benchmarks\n")]


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", api_section(), re.S)


@pytest.fixture(scope="module")
def readme_app(start_app):
    process, url, _log = start_app("--api", "--mcp")
    yield url
    stop_process(process)


def run_example(code: str, url: str, folder: Path) -> dict:
    port = url.rstrip("/").rsplit(":", 1)[1]
    code = code.replace("http://127.0.0.1:7860/", url).replace("port=7860", f"port={port}")
    namespace: dict = {}
    here = os.getcwd()
    os.chdir(ROOT)  # the examples name assets/... relative to the repository
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(here)
    return namespace


def test_the_gradio_client_example(readme_app, tmp_path):
    block = next(code for code in code_blocks("python") if "gradio_client" in code)
    found = run_example(block, readme_app, tmp_path)
    assert found["info"]["images"][0]["mode"] == "ip_adapter"
    assert Path(found["images"][0]["image"]).read_bytes()[:4] == b"\x89PNG"


def test_the_webuiapi_example(readme_app, tmp_path, monkeypatch):
    block = next(code for code in code_blocks("python") if "webuiapi" in code)
    monkeypatch.chdir(tmp_path)
    block = block.replace('result.image.save("cat.png")', f'result.image.save({str(tmp_path / "cat.png")!r})')
    found = run_example(block, readme_app, tmp_path)
    assert found["result"].info["all_seeds"] == [7] and (tmp_path / "cat.png").is_file()


def test_the_rest_route_example(readme_app, tmp_path, monkeypatch, capsys):
    block = next(code for code in code_blocks("python") if "/kolors/v1/generate" in code)
    monkeypatch.chdir(tmp_path)
    block = block.replace('"num_inference_steps": 25', '"num_inference_steps": 2')  # the tiny model, quickly
    found = run_example(block.replace('open("cat.png"', f'open({str(tmp_path / "cat.png")!r}'), readme_app, tmp_path)
    assert found["answer"].status_code == 200 and capsys.readouterr().out.strip() == "7"
    from PIL import Image

    from kolors_app.metadata.png_chunks import read_image_parameters

    stored = read_image_parameters(Image.open(tmp_path / "cat.png")).parameters
    assert stored["seed"] == 7 and stored["scheduler"] == "DPM++ 2M Karras"


def test_the_openai_client_example(readme_app, tmp_path, monkeypatch):
    block = next(code for code in code_blocks("python") if "from openai import OpenAI" in code)
    monkeypatch.chdir(tmp_path)
    block = block.replace('"num_inference_steps": 25', '"num_inference_steps": 2')  # the tiny model, quickly
    block = block.replace("http://127.0.0.1:7860/v1", readme_app + "v1")
    found = run_example(block.replace('open("cat.png"', f'open({str(tmp_path / "cat.png")!r}'), readme_app, tmp_path)
    assert found["answer"].data[0].b64_json
    from PIL import Image

    from kolors_app.metadata.png_chunks import read_image_parameters

    stored = read_image_parameters(Image.open(tmp_path / "cat.png")).parameters
    assert stored["seed"] == 7 and stored["scheduler"] == "DPM++ 2M Karras" and stored["width"] == 1024


def test_the_mcp_configuration_names_the_served_path(readme_app):
    config = json.loads(code_blocks("json")[0])
    assert config["mcpServers"]["kolors"]["url"].endswith("/gradio_api/mcp/")
    import httpx

    answer = httpx.post(readme_app + "gradio_api/mcp/", timeout=30, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        headers={"accept": "application/json, text/event-stream"})
    assert answer.status_code == 200, answer.text


def test_every_ignored_a1111_field_is_listed():
    from kolors_app.api.a1111.payloads import IGNORED_FIELDS

    section = api_section()
    paragraph = section[section.index("**Accepted and ignored**"):].split("\n\n")[0]
    assert set(IGNORED_FIELDS) <= set(re.findall(r"`(\w+)`", paragraph))
