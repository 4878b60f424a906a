"""ZeroGPU on Hugging Face Spaces: the GPU decorator and how many seconds of GPU a request asks for.

Import this module before anything imports torch: on ZeroGPU `spaces` must patch torch before CUDA starts.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Callable

# Published: 8.11 it/s on a 4090 and 9.88 it/s on an A100 for 1024x1024 with CFG; a ZeroGPU slice is
# shared, so budget 0.15 s per step, plus loading the weights onto the GPU, the text encoder and the VAE.
STEP_SECONDS = 0.15
FIXED_SECONDS = 10
DECODE_SECONDS = 0.5
IP_ADAPTER_FACTOR = 1.2
MIN_SECONDS, MAX_SECONDS = 15, 240
DEFAULT_SECONDS = 60


def on_zero_gpu() -> bool:
    """Whether this is a ZeroGPU Space (the GPU exists only inside decorated calls)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


if on_zero_gpu() and importlib.util.find_spec("spaces") is not None:
    import spaces  # noqa: F401  (patches torch before CUDA is touched)


def gpu_duration(request) -> int:
    """Seconds of GPU for one request: steps x size x images at the published speed, with margin, clamped."""
    steps = request.num_inference_steps
    if request.init is not None:
        steps = max(1, int(steps * request.init.strength))
    megapixels = request.width * request.height / 2**20
    seconds = FIXED_SECONDS + request.num_images * megapixels * (steps * STEP_SECONDS + DECODE_SECONDS)
    if request.reference is not None:
        seconds *= IP_ADAPTER_FACTOR
    return int(min(MAX_SECONDS, max(MIN_SECONDS, math.ceil(seconds))))


def request_duration(*args, **kwargs) -> int:
    """gpu_duration of the first request among a decorated function's arguments; the default without one."""
    for value in (*args, *kwargs.values()):
        if all(hasattr(value, name) for name in ("width", "height", "num_inference_steps", "num_images", "init", "reference")):
            return gpu_duration(value)
    return DEFAULT_SECONDS


def gpu_decorator(duration: int | Callable[..., int] = request_duration):
    """`spaces.GPU(duration=...)` on a ZeroGPU Space; elsewhere a decorator that returns the function unchanged."""
    if on_zero_gpu() and importlib.util.find_spec("spaces") is not None:
        import spaces

        return spaces.GPU(duration=duration)
    return lambda function: function
