"""The README's Spaces front matter is valid and agrees with requirements.txt and the defaults."""

import re
from pathlib import Path

import gradio
import yaml

from kolors_app.core.config import DEFAULT_IP_ADAPTER, DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with the Spaces front matter"
    return yaml.safe_load(match.group(1))


def test_front_matter_is_a_gradio_space_running_app_py():
    meta = front_matter()
    assert meta["sdk"] == "gradio"
    assert (ROOT / meta["app_file"]).is_file()
    assert re.fullmatch(r"3\.\d+", str(meta["python_version"]))
    assert set(meta["models"]) == {DEFAULT_MODEL, DEFAULT_IP_ADAPTER}
    assert all(line.split()[0] in meta["models"] for line in meta["preload_from_hub"])


def test_sdk_version_matches_requirements_and_installed_gradio():
    meta = front_matter()
    requirement = next(line for line in (ROOT / "requirements.txt").read_text().splitlines()
                       if line.startswith("gradio"))
    low, high = re.search(r">=([\d.]+),<(\d+)", requirement).groups()
    version = tuple(int(part) for part in str(meta["sdk_version"]).split("."))
    assert version >= tuple(int(part) for part in low.split(".")) and version[0] < int(high)
    assert str(meta["sdk_version"]) == gradio.__version__


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash .ci/run" in readme
    assert ".venv/bin/python -m pytest -q" in readme and ".venv/bin/python -m pytest -q" in ci
