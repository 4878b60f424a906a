"""What each speed option buys: time, pixel change and (on CUDA) peak memory, each against the defaults."""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import torch

from kolors_app.engine.generation import generate
from kolors_app.models.gpu_options import compile_unet, recompile_count, warm_up

from .common import Row, Sample, medians, row, timed
from .core import Case, loaded_manager, request_for

OPTIONS = {
    "defaults (sdpa)": {},
    "attention=eager": {"attention": "eager"},
    "channels_last": {"channels_last": True},
    "fuse_qkv": {"fuse_qkv": True},
    "vae_slicing": {"vae_slicing": True},
    "vae_tiling": {"vae_tiling": True},
}
BATCH = 2  # two images a run, so that VAE slicing has something to slice


def _run(manager, case: Case, repeats: int) -> tuple[Sample, np.ndarray, float]:
    request = request_for(case, 1, num_images=BATCH)
    generate(manager, request)  # warm-up, fills the prompt cache
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    samples = [timed(lambda: generate(manager, request)) for _ in range(repeats)]
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return medians(samples), np.asarray(samples[-1].value.images[0].image, dtype=np.int16), peak


def measure_options(case: Case, repeats: int, with_compile: bool) -> list[Row]:
    """Each option alone, on a fresh copy of the model; compile last, with its warm-up and recompilations."""
    case = dataclasses.replace(case, steps=min(case.steps, 2))  # options act per step: two keep it short
    rows, baseline, reference = [], None, None
    for name, changes in OPTIONS.items():
        manager = loaded_manager(case, **changes)
        sample, image, peak = _run(manager, case, repeats)
        if baseline is None:
            baseline, reference = sample, image
        rows.append(_row(case, name, sample, baseline, image, reference, peak))
        del manager
        gc.collect()
    if with_compile:
        rows.append(_compiled(case, repeats, baseline, reference))
    return rows


def _row(case, name, sample, baseline, image, reference, peak, note="") -> Row:
    difference = int(np.abs(image - reference).max())
    memory = "" if np.isnan(peak) else f", peak {peak:.1f} GiB"
    return row("options", case.label, name, sample, baseline, "", f"max pixel change {difference}{memory}{note}",
               case.clock, max_pixel_change=difference, peak_gib=peak)


def _compiled(case: Case, repeats: int, baseline: Sample, reference: np.ndarray) -> Row:
    manager = loaded_manager(case)
    pipe = manager.pipeline()
    compile_unet(pipe.unet)
    sizes = ((case.size, case.size), (case.size + 64, case.size))
    warm = timed(lambda: warm_up(pipe, sizes=sizes))
    graphs = recompile_count()
    sample, image, peak = _run(manager, case, repeats)
    for width, height in ((case.size, case.size + 128), (case.size + 128, case.size + 64)):
        generate(manager, request_for(case, 1, width=width, height=height))
    new_graphs = recompile_count() - graphs
    return _row(case, "compile (regional)", sample, baseline, image, reference, peak,
                f", warm-up {warm.wall:.0f} s, graphs compiled for 2 unseen sizes: {new_graphs}")
