"""Measurement 6 on a CUDA GPU with the real model: it/s, seconds per image and peak memory per memory plan."""

from __future__ import annotations

import gc
import time

import torch

from kolors_app.core.config import Settings
from kolors_app.engine.generation import RunControl, generate
from kolors_app.core.request import GenerationRequest

from .common import Row, median, row
from .core import PROMPT, Case, loaded_manager

# KOLORS.md: fp16, fully on the GPU, 1024x1024, 50 steps, DPM++ Karras (onediff's Kolors example).
PUBLISHED = "4090: 8.11 it/s, 6.55 s; A100: 9.88 it/s, 5.38 s; peak 20.6 GiB"
SCHEDULER = "DPM++ 2M Karras"


def run_timed(manager, steps: int, size: int, seed: int) -> tuple[float, float]:
    """Seconds for one image, and denoising iterations per second from the step callbacks."""
    marks: list[float] = []

    def on_progress(_step, _total):
        torch.cuda.synchronize()
        marks.append(time.perf_counter())

    request = GenerationRequest(prompt=PROMPT, width=size, height=size, num_inference_steps=steps,
                                 guidance_scale=5.0, scheduler=SCHEDULER, seed=seed)
    torch.cuda.synchronize()
    started = time.perf_counter()
    generate(manager, request, RunControl(on_progress=on_progress))
    seconds = time.perf_counter() - started
    rate = (len(marks) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 else float("nan")
    return seconds, rate


def measure_plan(model: str, plan, repeats: int, size: int = 1024, step_counts=(25, 50),
                 device: str = "cuda") -> list[Row]:
    """One memory plan: warm up, then median seconds per image and it/s at each step count, and peak memory."""
    offload, text_encoder, label = plan.offload, plan.text_encoder, f"plan {plan.name}"
    if offload == "sequential":
        repeats = 1  # minutes per image: one is enough to see it
    settings = Settings(model=model, device=device, dtype="float16" if device == "cuda" else "auto",
                        offload=offload, text_encoder=text_encoder, save_outputs=False)
    try:
        manager = loaded_manager(Case(label, settings, step_counts[0], size))
        generate(manager, GenerationRequest(prompt=PROMPT, width=size, height=size, num_inference_steps=2,
                                             scheduler=SCHEDULER, seed=0))
    except Exception as error:  # a plan this build or GPU cannot run is a result, not a crash of the suite
        return [row("6 CUDA", label, "skipped", None, note=f"{type(error).__name__}: {error}"[:160])]
    rows = []
    torch.cuda.reset_peak_memory_stats()
    for steps in step_counts:
        runs = [run_timed(manager, steps, size, seed) for seed in range(1, repeats + 1)]
        seconds, rate = median([r[0] for r in runs]), median([r[1] for r in runs])
        rows.append(Row("6 CUDA", label, f"{size}px, {steps} steps, {SCHEDULER}", seconds, None, None,
                        PUBLISHED if steps == 50 and plan.name == "gpu" else "",
                        f"{rate:.2f} it/s", {"it_per_s": rate, "steps": steps}))
    peak = torch.cuda.max_memory_allocated() / 2**30
    for item in rows:
        item.note += f", peak {peak:.1f} GiB"
        item.extra["peak_gib"] = peak
    del manager
    gc.collect()
    torch.cuda.empty_cache()
    return rows


def measure_cuda(model: str, repeats: int) -> list[Row]:
    """Every memory plan of the step-down ladder in turn; needs a CUDA GPU and the real weights."""
    if not torch.cuda.is_available():
        return [row("6 CUDA", "-", "skipped", None, note="no CUDA GPU on this machine")]
    from kolors_app.models.memory import LADDER

    rows = []
    for plan in LADDER:
        rows += measure_plan(model, plan, repeats)
    return rows
