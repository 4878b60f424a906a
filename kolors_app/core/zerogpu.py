"""ZeroGPU on Hugging Face Spaces: whether this is one, and the GPU decorator.

Import this module before anything imports torch: on ZeroGPU `spaces` must patch torch before CUDA starts.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Callable


def on_zero_gpu() -> bool:
    """Whether this is a ZeroGPU Space (the GPU exists only inside decorated calls)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


if on_zero_gpu() and importlib.util.find_spec("spaces") is not None:
    import spaces  # noqa: F401  (patches torch before CUDA is touched)


def gpu_decorator(duration: int | Callable[..., int]):
    """`spaces.GPU(duration=...)` on a ZeroGPU Space; elsewhere a decorator that returns the function unchanged.

    The job engine passes a job's duration from its cost (kolors_app/engine/cost.py gpu_seconds).
    """
    if on_zero_gpu() and importlib.util.find_spec("spaces") is not None:
        import spaces

        return spaces.GPU(duration=duration)
    return lambda function: function
