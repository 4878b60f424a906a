"""What every benchmark shares: threads, tiny-model settings, timing, forward counting, table and JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_THREADS = 2


def set_threads(count: int) -> None:
    """The same torch thread count for every measurement (and for child processes)."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(count)
    # Idle OpenMP threads sleep instead of spinning, so CPU time counts work, not waiting (set before torch loads).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(count)


def tiny_settings(size: str, **changes):
    """Settings for a tiny model of this size (built offline on first use), on the CPU."""
    from kolors_app.core.config import Settings
    from kolors_app.testing.tiny import tiny_model_dir
    from kolors_app.testing.tiny_presets import IP_ADAPTER_REPO, KOLORS_REPO

    folder = tiny_model_dir(size)
    values = dict(model=str(folder / KOLORS_REPO), ip_adapter=str(folder / IP_ADAPTER_REPO), device="cpu",
                  save_outputs=False)
    return Settings(**{**values, **changes})


def quiet(pipe):
    """No tqdm bar: both sides of a comparison get the same treatment, and the table stays readable."""
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass
class Sample:
    """One timed call: wall seconds, this process's CPU seconds, and what the call returned."""

    wall: float
    cpu: float
    value: Any = None


def timed(function: Callable[[], Any]) -> Sample:
    """Time one call by the wall clock and by CPU time (which other processes on a busy machine barely move)."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return Sample(time.perf_counter() - wall, time.process_time() - cpu, value)


def median(values: list[float]) -> float:
    """The median (the benchmarks report medians of repeated runs)."""
    return statistics.median(values)


def medians(samples: list[Sample]) -> Sample:
    """Median wall and median CPU seconds of repeated samples."""
    return Sample(median([s.wall for s in samples]), median([s.cpu for s in samples]))


class ForwardCounter:
    """Counts a module's forward calls with a hook; a benchmark must count them, not guess."""

    def __init__(self, module):
        self.calls = 0
        self._handle = module.register_forward_hook(self._count)

    def _count(self, *_):
        self.calls += 1

    def close(self) -> None:
        """Remove the hook."""
        self._handle.remove()


@dataclass
class Row:
    """One line of the table: a case, its median wall and CPU seconds, and how it compares with a reference."""

    measure: str
    model: str
    case: str
    seconds: float | None
    cpu_seconds: float | None = None
    ratio: float | None = None
    goal: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)


def paired_ratio(samples: list[Sample], references: list[Sample], clock: str = "cpu") -> float:
    """The median of run-by-run ratios: each pair ran back to back, so a busy machine's drift cancels out."""
    pick = (lambda s: s.cpu) if clock == "cpu" else (lambda s: s.wall)
    return median([pick(mine) / pick(theirs) for mine, theirs in zip(samples, references)])


def row(measure: str, model: str, case: str, sample: Sample | None, reference: Sample | None = None,
        goal: str = "", note: str = "", clock: str = "cpu", ratio: float | None = None, **extra) -> Row:
    """A row from a median sample; the ratio compares CPU seconds (wall seconds on a GPU) with the reference's."""
    if sample is None:
        return Row(measure, model, case, None, goal=goal, note=note, extra=extra)
    if ratio is None and reference is not None:
        mine, theirs = (sample.cpu, reference.cpu) if clock == "cpu" else (sample.wall, reference.wall)
        ratio = mine / theirs if theirs > 0 else None
    return Row(measure, model, case, sample.wall, sample.cpu, ratio, goal, note, extra | {"ratio_clock": clock})


def format_table(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    lines = ["| measure | model | case | wall (median) | CPU (median) | ratio | goal | note |",
             "| --- | --- | --- | ---: | ---: | ---: | --- | --- |"]
    for item in rows:
        wall = "" if item.seconds is None else _seconds(item.seconds)
        cpu = "" if item.cpu_seconds is None else _seconds(item.cpu_seconds)
        ratio = "" if item.ratio is None else f"{item.ratio:.3f}"
        lines.append(f"| {item.measure} | {item.model} | {item.case} | {wall} | {cpu} | {ratio} | {item.goal} "
                     f"| {item.note} |")
    return "\n".join(lines)


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} us"


def environment(threads: int) -> dict:
    """Where the numbers come from: machine, libraries, threads, load, commit."""
    import diffusers
    import torch
    import transformers

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "commit": commit.stdout.strip(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_results(rows: list[Row], threads: int, path: Path) -> Path:
    """Write the rows and the environment as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"environment": environment(threads), "rows": [row.__dict__ for row in rows]}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return path
