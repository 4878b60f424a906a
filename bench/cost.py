"""The job engine's numbers: a plot cell's fixed cost in steps, and the engine's own overhead per job.

`python -m bench.cost [--size unet-heavy] [--pixels 512] [--repeats 5]` on the CPU with a tiny model (no GPU
here): prints a table and writes bench/results/cost.json.

- cell: one plot cell of 1 step and of 1 + k steps; their difference over k is a step, and the rest of the 1-step
  cell (text encoder, VAE decode, the PNG, the grid) is the cell's fixed cost, as steps and as megapixel-steps at
  this size. kolors_app/engine/cost.py sets CELL_WORK from this and the published GPU speeds.
- overhead: the same small generation run directly (run_validated) and submitted to the engine (submit + result),
  by the wall clock; the difference is what validation, costing, the executor's queue and the events add to a job.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from .common import RESULTS, Row, format_table, set_threads, timed, tiny_settings, write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__)
    parser.add_argument("--size", default="unet-heavy", help="tiny model size (kolors_app/testing/tiny.py)")
    parser.add_argument("--pixels", type=int, default=512)
    parser.add_argument("--steps", type=int, default=9, help="steps of the longer cell (k + 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS / "cost.json")
    args = parser.parse_args(argv)
    set_threads(2)

    from kolors_app.core.request import GenerationRequest
    from kolors_app.core.validation import validate
    from kolors_app.creative import xyz
    from kolors_app.engine.cost import CELL_WORK, MEGAPIXEL
    from kolors_app.engine.engine import Engine
    from kolors_app.engine.executors import LocalExecutor
    from kolors_app.engine.generation import run_validated
    from kolors_app.engine.jobs import GENERATE, LOCAL_OWNER, PLOT, PYTHON, Job, PlotSpec
    from kolors_app.models.pipeline_manager import PipelineManager
    from kolors_app.serving.quotas import engine_limits

    settings = tiny_settings(args.size)
    manager = PipelineManager(settings)
    manager.load()
    engine = Engine(manager, LocalExecutor(manager), engine_limits(settings))
    limits = settings.limits

    def request(steps: int, seed: int = 1) -> GenerationRequest:
        return validate(GenerationRequest(prompt="a red fox in the snow", width=args.pixels, height=args.pixels,
                                          num_inference_steps=steps, seed=seed), limits)

    def plot(steps: int) -> float:
        axes = [xyz.Axis("seed", [1, 2])]
        cells = xyz.plan_cells(request(steps).to_dict(), axes)
        job = Job(PLOT, LOCAL_OWNER, PYTHON, [request(steps, cell.params["seed"]) for cell in cells],
                  plot=PlotSpec(cells, axes))
        return timed(lambda: engine.submit(job, follow=False).result()).cpu / len(cells)

    def median(function) -> float:
        function()  # warm up: caches, first allocations
        return statistics.median(function() for _ in range(args.repeats))

    short, long = median(lambda: plot(1)), median(lambda: plot(args.steps))
    step = (long - short) / (args.steps - 1)
    fixed_steps = (short - step) / step
    megapixels = args.pixels * args.pixels / MEGAPIXEL
    # Both from a thread that lives on, as the executor's worker does (torch's OpenMP pool is per thread).
    direct_samples = [timed(lambda: run_validated(manager, request(2))) for _ in range(args.repeats + 1)][1:]
    engine_samples = [timed(lambda: engine.submit(Job(GENERATE, LOCAL_OWNER, PYTHON, [request(2)]),
                                                  follow=False).result()) for _ in range(args.repeats + 1)][1:]
    direct = statistics.median(sample.wall for sample in direct_samples)
    submitted = statistics.median(sample.wall for sample in engine_samples)
    model = f"tiny {args.size}"
    rows = [
        Row("cost", model, f"plot cell, 1 step, {args.pixels} px", None, short,
            note=f"a step {step * 1000:.0f} ms; fixed part = {fixed_steps:.1f} steps = "
                 f"{fixed_steps * megapixels:.2f} megapixel-steps (CELL_WORK = {CELL_WORK})"),
        Row("cost", model, f"plot cell, {args.steps} steps, {args.pixels} px", None, long),
        Row("overhead", model, f"run_validated, 2 steps, {args.pixels} px", direct),
        Row("overhead", model, "engine submit + result, same job", submitted, ratio=submitted / direct,
            note=f"{(submitted - direct) * 1000:+.0f} ms a job"),
    ]
    print(format_table(rows))
    write_results(rows, 2, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
