"""ZeroGPU: the decorator changes nothing off Spaces; a job's GPU duration comes from the engine's cost function."""

import importlib.machinery
import sys
import types

from PIL import Image

from kolors_app.core import zerogpu
from kolors_app.core.request import GenerationRequest, InitImage, Reference
from kolors_app.engine.cost import MAX_SECONDS, MIN_SECONDS, gpu_seconds, job_cost
from kolors_app.engine.jobs import GENERATE, LOCAL_OWNER, Job


def seconds(*requests) -> int:
    return gpu_seconds(job_cost(Job(GENERATE, LOCAL_OWNER, "python", list(requests))))


def test_decorator_returns_the_function_unchanged_off_spaces(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def run(x, y=2):
        return x + y

    assert zerogpu.gpu_decorator(30)(run) is run
    assert zerogpu.gpu_decorator(30)(run)(1) == 3


def test_decorator_is_spaces_gpu_on_zero_gpu(monkeypatch):
    calls = []
    fake = types.ModuleType("spaces")
    fake.__spec__ = importlib.machinery.ModuleSpec("spaces", None)
    fake.GPU = lambda duration: calls.append(duration) or (lambda function: ("wrapped", function))
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")

    def run():
        return 1

    assert zerogpu.gpu_decorator(42)(run) == ("wrapped", run)
    assert calls == [42]


def test_duration_grows_with_steps_size_images_and_iterations():
    base = GenerationRequest(prompt="x", width=1024, height=1024, num_inference_steps=25)
    first = seconds(base)
    for bigger in (GenerationRequest(prompt="x", width=1024, height=1024, num_inference_steps=50),
                   GenerationRequest(prompt="x", width=1024, height=1024, num_inference_steps=25, num_images=2)):
        assert seconds(bigger) > first
    assert seconds(base, base) > first  # A1111's n_iter: one job, every iteration counted
    assert seconds(GenerationRequest(prompt="x", num_inference_steps=150, num_images=8, width=2048,
                                     height=2048)) == MAX_SECONDS
    assert seconds(GenerationRequest(prompt="x", num_inference_steps=1, width=256, height=256)) == MIN_SECONDS


def test_an_init_image_counts_only_the_steps_that_run():
    image = Image.new("RGB", (64, 64))
    full = GenerationRequest(prompt="x", num_inference_steps=100)
    part = GenerationRequest(prompt="x", num_inference_steps=100, init=InitImage(image, 0.3),
                             reference=Reference(image))
    assert seconds(part) < seconds(full)
