"""Run the benchmark suite: `python -m bench.run [measurements...]`; prints a table and writes JSON."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

from .common import DEFAULT_THREADS, RESULTS, Row, format_table, set_threads, write_results

MEASUREMENTS = ("overhead", "reseed", "switch", "startup", "http", "options", "cuda")
CPU_SIZES = ("text-heavy", "unet-heavy")
REAL_MODEL = "Kwai-Kolors/Kolors-diffusers"


def build_parser() -> argparse.ArgumentParser:
    """The suite's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("measurements", nargs="*", default=[],
                        help=f"which to run, any of {', '.join(MEASUREMENTS)} (default: all)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads, here and in servers")
    parser.add_argument("--repeats", type=int, default=5, help="runs per case; the table shows medians")
    parser.add_argument("--sizes", nargs="+", default=list(CPU_SIZES), help="tiny model sizes for 1-3")
    parser.add_argument("--model", default=REAL_MODEL, help="real model for the CUDA measurements")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile in `options` (slow on CPU)")
    parser.add_argument("--json", type=Path, default=None, help="where to write results (default bench/results/)")
    return parser


def cases(args):
    """Tiny models on the CPU; on a CUDA machine the real model at 1024 px as well."""
    import torch

    from kolors_app.core.config import Settings

    from .core import Case, tiny_case

    found = [tiny_case(size) for size in args.sizes]
    if torch.cuda.is_available():
        real = Settings(model=args.model, device="cuda", save_outputs=False)
        found.append(Case("Kolors fp16 (CUDA)", real, 25, 1024))
    return found


def plan(args) -> list[tuple[str, Callable[[], list[Row]]]]:
    """The chosen measurements as (title, thunk) pairs, in table order."""
    import torch

    from . import core, cuda, options, server

    chosen = args.measurements or list(MEASUREMENTS)
    steps: list[tuple[str, Callable[[], list[Row]]]] = []
    all_cases = cases(args)
    for case in all_cases:
        if "overhead" in chosen:
            steps.append((f"1 overhead, {case.label}", lambda case=case: core.measure_overhead(case, args.repeats)))
        if "reseed" in chosen:
            steps.append((f"2 reseed, {case.label}", lambda case=case: core.measure_reseed(case, args.repeats)
                          + core.measure_ip_reseed(case, min(args.repeats, 3))))
        if "switch" in chosen:
            steps.append((f"3 switch, {case.label}", lambda case=case: core.measure_switch(case, min(args.repeats, 3))))
    reason = server.missing_app_reason()
    if reason and ("startup" in chosen or "http" in chosen):
        print(f"skipping start-up and HTTP measurements: {reason}", file=sys.stderr)
        steps.append(("4-5 server", lambda: [Row("4-5 server", "tiny", "skipped", None, note=reason)]))
    elif reason is None:
        if "startup" in chosen:
            steps.append(("4 start-up", lambda: server.measure_startup(args.threads, min(args.repeats, 3))))
        if "http" in chosen:
            steps.append(("5 HTTP", lambda: server.measure_http(args.threads, args.repeats)))
    if "options" in chosen:
        target = all_cases[-1] if torch.cuda.is_available() else core.tiny_case("unet-heavy")
        with_compile = args.compile or torch.cuda.is_available()
        steps.append(("options", lambda: options.measure_options(target, min(args.repeats, 3), with_compile)))
    if "cuda" in chosen:
        steps.append(("6 CUDA", lambda: cuda.measure_cuda(args.model, min(args.repeats, 3))))
    return steps


def run(args) -> list[Row]:
    """Run the chosen measurements; one that fails becomes a row saying why, and the rest still run."""
    rows: list[Row] = []
    started = time.perf_counter()
    for title, measure in plan(args):
        print(f"[{time.perf_counter() - started:6.0f} s] {title}", file=sys.stderr, flush=True)
        try:
            rows += measure()
        except Exception as error:  # reported in the table; the suite goes on
            rows.append(Row(title, "-", "failed", None, note=f"{type(error).__name__}: {error}"[:200]))
    print(f"[{time.perf_counter() - started:6.0f} s] done", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run, print the table, write the JSON."""
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.measurements if name not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurement {unknown[0]!r}; choose from {', '.join(MEASUREMENTS)}")
    set_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    import torch

    rows = run(args)
    print(format_table(rows))
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    path = write_results(rows, args.threads, args.json or RESULTS / f"{kind}.json")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
