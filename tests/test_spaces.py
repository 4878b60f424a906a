"""The app runs with and without the `spaces` package and ZeroGPU; off Spaces nothing changes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FAKE_SPACES = '''
import functools, json, os

def GPU(duration=60):
    def wrap(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            with open(os.environ["FAKE_SPACES_LOG"], "a") as log:
                log.write(json.dumps({"function": function.__name__, "duration": seconds}) + "\\n")
            return function(*args, **kwargs)
        return run
    return wrap
'''

SCRIPT = textwrap.dedent('''
    import json, sys
    import app  # imports kolors_app.core.zerogpu first, as on a Space
    from kolors_app.core.config import Settings
    from kolors_app.core.request import GenerationRequest
    from kolors_app.launch import build
    blocks, ctx = build(Settings(model="tiny", device="cpu", save_outputs=False))
    result = ctx.generate(GenerationRequest(prompt="a kite", width=256, height=256, num_inference_steps=2,
                                             seed=5))
    print(json.dumps({"seeds": [item.seed for item in result.images], "spaces": "spaces" in sys.modules}))
''')


def run_app(tmp_path, zero_gpu: bool, with_package: bool) -> tuple[dict, list]:
    environment = {**os.environ, "FAKE_SPACES_LOG": str(tmp_path / "gpu.log"), "PYTHONPATH": str(ROOT)}
    environment.pop("SPACES_ZERO_GPU", None)
    if zero_gpu:
        environment["SPACES_ZERO_GPU"] = "true"
    if with_package:
        (tmp_path / "fake" / "spaces").mkdir(parents=True)
        (tmp_path / "fake" / "spaces" / "__init__.py").write_text(FAKE_SPACES)
        environment["PYTHONPATH"] = f"{tmp_path / 'fake'}{os.pathsep}{ROOT}"
    else:
        # Hide the installed package: a plain local install may not have it.
        (tmp_path / "hidden" / "spaces").mkdir(parents=True)
        (tmp_path / "hidden" / "spaces" / "__init__.py").write_text("raise ImportError('no spaces here')")
        environment["PYTHONPATH"] = f"{tmp_path / 'hidden'}{os.pathsep}{ROOT}"
    output = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert output.returncode == 0, output.stderr[-3000:]
    log = tmp_path / "gpu.log"
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return json.loads(output.stdout.strip().splitlines()[-1]), calls


@pytest.mark.parametrize("with_package", [True, False])
def test_off_spaces_the_decorator_changes_nothing(tiny_dir, tmp_path, with_package):
    result, calls = run_app(tmp_path, zero_gpu=False, with_package=with_package)
    assert result["seeds"] == [5]
    assert calls == []


def test_on_zero_gpu_generation_runs_inside_the_gpu_decorator(tiny_dir, tmp_path):
    result, calls = run_app(tmp_path, zero_gpu=True, with_package=True)
    assert result == {"seeds": [5], "spaces": True}
    # The job runs inside one GPU slice whose duration is the engine's cost function's (the minimum here).
    assert calls == [{"function": "_run_in_gpu_slice", "duration": 15}]
