"""What a job costs, counted once for every entrance: the work budget, the output cap and the ZeroGPU duration.

Work is in megapixel-steps: width x height (megapixels) x images x the denoising steps that run, for every
iteration; plus a hires pass (its megapixels x its steps x its denoising strength, and a pixel upscaler's output
megapixels); plus, for an X/Y/Z plot, every cell's own work and CELL_WORK for decoding, encoding and saving it;
plus the Upscale action's output megapixels. Output megapixels (every image a job hands back) have a cap of
their own: memory grows with them whatever the steps (2048x2048 x 8 images at 1 step peaked above 6 GB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kolors_app.core.request import GenerationRequest
from kolors_app.core.errors import ValidationError
from kolors_app.engine.jobs import GENERATE, PLOT, Job

MEGAPIXEL = 1024 * 1024
# A plot cell's fixed cost beyond its steps, in megapixel-steps: the VAE decode of a 1024 px image, its PNG
# encoding and saving, and the text encoder. Measured on the tiny model on CPU (bench/cost.py) and set from
# the published speeds: a 1024 px Kolors step is ~0.1 s on a 4090 and the VAE decode ~0.2-0.3 s, so 2 steps.
CELL_WORK = 2.0
# The Upscale action and a hires pass's pixel upscaler: work per output megapixel (ESRGAN at 1 MP costs about
# as much as one 1024 px U-Net step on a GPU).
UPSCALE_WORK_PER_MEGAPIXEL = 1.0
LATENT = "Latent"
# ZeroGPU: seconds per megapixel-step (a shared slice is slower than the published 8-10 it/s), per output
# megapixel (VAE decode), and for loading the weights onto the GPU and the text encoder.
STEP_SECONDS = 0.15
DECODE_SECONDS = 0.5
FIXED_SECONDS = 10
MIN_SECONDS, MAX_SECONDS = 15, 240


@dataclass(frozen=True)
class Budget:
    """The most one job may cost: work in megapixel-steps, and output megapixels."""

    max_work: float
    max_output_megapixels: float


@dataclass(frozen=True)
class Cost:
    """A job's work (megapixel-steps) and output megapixels, with the field a refusal names for each."""

    work: float
    output_megapixels: float
    work_field: str = "num_inference_steps"
    output_field: str = "num_images"


def work_of(width: float, height: float, num_images: int, steps: int, strength: float | None = None) -> float:
    """Megapixels x images x the denoising steps that actually run (an init image runs steps x strength)."""
    run_steps = max(1, int(steps * strength)) if strength is not None else steps
    return width * height / MEGAPIXEL * num_images * run_steps


def _hires_size(request: GenerationRequest) -> tuple[int, int]:
    factor = float(request.hires.upscale)
    return int(request.width * factor) // 8 * 8, int(request.height * factor) // 8 * 8


def _canvas(request: GenerationRequest) -> tuple[int, int]:
    """The size the pipeline runs at: the request's, or an outpainted canvas's."""
    if request.inpaint is not None and any(request.inpaint.outpaint) and request.init is not None:
        left, right, up, down = request.inpaint.outpaint
        return request.init.image.width + left + right, request.init.image.height + up + down
    return request.width, request.height


def request_cost(request: GenerationRequest) -> Cost:
    """The cost of one validated request (one iteration)."""
    width, height = _canvas(request)
    strength = request.init.strength if request.init is not None else None
    work = work_of(width, height, request.num_images, request.num_inference_steps, strength)
    output = width * height / MEGAPIXEL * request.num_images
    work_field = "num_inference_steps"
    if request.hires is not None:
        fix = request.hires
        target_w, target_h = _hires_size(request)
        steps = fix.steps or request.num_inference_steps
        second = target_w * target_h / MEGAPIXEL * request.num_images * steps * float(fix.denoising_strength)
        if fix.upscaler != LATENT:
            second += target_w * target_h / MEGAPIXEL * request.num_images * UPSCALE_WORK_PER_MEGAPIXEL
        work_field = "hires_steps" if second > work else work_field
        work += second
        output = target_w * target_h / MEGAPIXEL * request.num_images
    return Cost(work, output, work_field, "num_images" if request.num_images > 1 else "width")


def plot_cost(requests: list[GenerationRequest], axes: list) -> Cost:
    """Every cell's own work plus CELL_WORK; output: the cells' megapixels, and the grid that holds them again."""
    costs = [request_cost(request) for request in requests]
    sizes = [len(axis.values) if axis else 1 for axis in (list(axes) + [None] * 3)[:3]]
    letter = "xyz"[max(range(3), key=lambda index: sizes[index])]
    return Cost(sum(cost.work + CELL_WORK for cost in costs), 2 * sum(cost.output_megapixels for cost in costs),
                f"{letter}_values", f"{letter}_values")


def upscale_cost(width: int, height: int, factor: float) -> Cost:
    """The Upscale action: its output megapixels, as work and as output."""
    output = round(width * factor) * round(height * factor) / MEGAPIXEL
    return Cost(output * UPSCALE_WORK_PER_MEGAPIXEL, output, "upscale_factor", "upscale_factor")


def job_cost(job: Job) -> Cost:
    """The cost of a whole job: every iteration, every plot cell, or the upscale."""
    if job.kind == GENERATE:
        costs = [request_cost(request) for request in job.requests]
        first = costs[0]
        return Cost(sum(c.work for c in costs), sum(c.output_megapixels for c in costs),
                    first.work_field if len(costs) == 1 else "n_iter",
                    first.output_field if len(costs) == 1 else "n_iter")
    if job.kind == PLOT:
        return plot_cost(job.requests, job.plot.axes)
    spec = job.upscale
    return upscale_cost(spec.image.width, spec.image.height, spec.factor)


def check_budget(cost: Cost, budget: Budget) -> None:
    """Refuse a job over the budget: the field to lower, code "over_budget", and the most allowed."""
    if cost.work > budget.max_work:
        raise ValidationError(cost.work_field, (
            f"this job is {cost.work:,.0f} megapixel-steps (size x images x steps, hires pass and plot cells "
            f"included); at most {budget.max_work:,.0f} allowed on this server: lower the size, the number of "
            "images, the steps or the cells"), code="over_budget", allowed={"max": budget.max_work})
    if cost.output_megapixels > budget.max_output_megapixels:
        raise ValidationError(cost.output_field, (
            f"this job makes {cost.output_megapixels:,.1f} megapixels of images; at most "
            f"{budget.max_output_megapixels:,.0f} allowed on this server: fewer or smaller images"),
            code="over_output_cap", allowed={"max": budget.max_output_megapixels})


def gpu_seconds(cost: Cost) -> int:
    """The `@spaces.GPU` duration of a job on ZeroGPU: its work at a shared slice's speed, with margin."""
    seconds = FIXED_SECONDS + cost.work * STEP_SECONDS + cost.output_megapixels * DECODE_SECONDS
    return int(min(MAX_SECONDS, max(MIN_SECONDS, math.ceil(seconds))))

