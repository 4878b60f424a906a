"""diffusers' patches: the pooled embeddings KolorsImg2ImgPipeline drops (#13612), and the private names read."""

from __future__ import annotations

import contextlib
import functools

from kolors_app.patches.versions import Touched

DISTRIBUTION = "diffusers"
POOLED = ("pooled_prompt_embeds", "negative_pooled_prompt_embeds")
TOUCHED = {
    "pooled_embeds_forwarded": (Touched("diffusers:KolorsImg2ImgPipeline", "encode_prompt", parameters=POOLED),),
    "execution_device": (Touched("diffusers:DiffusionPipeline", "_execution_device"),),
}


@contextlib.contextmanager
def pooled_embeds_forwarded(pipe, arguments: dict):
    """Make KolorsImg2ImgPipeline use the pooled embeddings it is given (diffusers 0.42 drops them, #13612)."""
    if type(pipe).__name__ != "KolorsImg2ImgPipeline":
        yield
        return
    pooled = {name: arguments[name] for name in POOLED if name in arguments}
    # An instance attribute shadows the method for this one call; the run lock keeps calls apart.
    pipe.encode_prompt = functools.partial(type(pipe).encode_prompt, pipe, **pooled)
    try:
        yield
    finally:
        del pipe.encode_prompt


def execution_device(pipe):
    """The device a pipeline computes on, wherever its offload hooks keep the weights."""
    return pipe._execution_device
