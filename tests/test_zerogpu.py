"""ZeroGPU: the decorator changes nothing off Spaces; the duration grows with the work and stays in bounds."""

import importlib.machinery
import sys
import types

from PIL import Image

from kolors_app.core import zerogpu
from kolors_app.core.request import GenerationRequest, InitImage, Reference


def test_decorator_returns_the_function_unchanged_off_spaces(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def run(x, y=2):
        return x + y

    assert zerogpu.gpu_decorator()(run) is run
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

    assert zerogpu.gpu_decorator()(run) == ("wrapped", run)
    assert calls == [zerogpu.request_duration]


def test_duration_grows_with_steps_size_and_images():
    base = GenerationRequest(prompt="x", width=1024, height=1024, num_inference_steps=25)
    seconds = zerogpu.gpu_duration(base)
    assert zerogpu.MIN_SECONDS <= seconds <= zerogpu.MAX_SECONDS
    for bigger in (GenerationRequest(prompt="x", num_inference_steps=50),
                   GenerationRequest(prompt="x", num_inference_steps=25, width=1536, height=1536),
                   GenerationRequest(prompt="x", num_inference_steps=25, num_images=4),
                   GenerationRequest(prompt="x", num_inference_steps=25, reference=Reference())):
        assert zerogpu.gpu_duration(bigger) > seconds
    assert zerogpu.gpu_duration(GenerationRequest(prompt="x", num_inference_steps=150, num_images=8,
                                                   width=2048, height=2048)) == zerogpu.MAX_SECONDS
    assert zerogpu.gpu_duration(GenerationRequest(prompt="x", num_inference_steps=1, width=256,
                                                   height=256)) == zerogpu.MIN_SECONDS


def test_image_to_image_counts_only_the_steps_it_runs():
    image = Image.new("RGB", (64, 64))
    full = GenerationRequest(prompt="x", num_inference_steps=100, init=InitImage(image, 1.0))
    part = GenerationRequest(prompt="x", num_inference_steps=100, init=InitImage(image, 0.3))
    assert zerogpu.gpu_duration(part) < zerogpu.gpu_duration(full)


def test_request_duration_finds_the_request_among_the_arguments():
    request = GenerationRequest(prompt="x", num_inference_steps=40)
    assert zerogpu.request_duration("context", request) == zerogpu.gpu_duration(request)
    assert zerogpu.request_duration(request=request) == zerogpu.gpu_duration(request)
    assert zerogpu.request_duration("nothing") == zerogpu.DEFAULT_SECONDS
