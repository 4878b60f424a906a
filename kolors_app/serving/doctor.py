"""`app.py --check`: versions, device, memory plan, disk and downloads; exit status 1 where something blocks a run."""

from __future__ import annotations

import inspect
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TextIO

from packaging.version import Version

from kolors_app.hub import downloads
from kolors_app.models import memory
from kolors_app.core.config import Settings
from kolors_app.patches import startup as library_patches
from kolors_app.patches.versions import TESTED, missing_message, missing_names, range_warning

PACKAGES = ("torch", "diffusers", "transformers", "huggingface_hub", "accelerate", "gradio", "spaces",
            "sentencepiece", "bitsandbytes")
REQUIRED = ("torch", "diffusers", "transformers", "huggingface_hub", "accelerate", "gradio", "sentencepiece")
# diffusers 0.31 has KolorsImg2ImgPipeline and the ChatGLM tokenizer fixed for transformers >= 4.45.
MIN_DIFFUSERS = Version("0.31.0")
TOKENIZER_BREAKING_TRANSFORMERS = Version("4.45.0")


@dataclass
class Report:
    """The lines of the check and whether anything blocks a run."""

    out: TextIO
    blockers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def section(self, title: str) -> None:
        print(f"\n{title}", file=self.out)

    def line(self, text: str) -> None:
        print(f"  {text}", file=self.out)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.line(f"WARNING: {text}")

    def block(self, text: str) -> None:
        self.blockers.append(text)
        self.line(f"BLOCKER: {text}")


def installed_version(package: str) -> str | None:
    """The installed version of a distribution, None if it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_versions(report: Report) -> None:
    """Versions of Python and the libraries, and the releases known to break Kolors."""
    report.section("Versions")
    report.line(f"python {platform.python_version()} ({sys.executable})")
    versions = {name: installed_version(name) for name in PACKAGES}
    for name, version in versions.items():
        if version:
            report.line(f"{name} {version}")
        elif name in REQUIRED:
            report.block(f"{name} is not installed (pip install -r requirements.txt)")
        elif name == "bitsandbytes":
            report.line("bitsandbytes not installed (only the 8-bit/4-bit text encoder plans need it)")
        else:
            report.line(f"{name} not installed (only needed on ZeroGPU Spaces)")
    diffusers, transformers = versions["diffusers"], versions["transformers"]
    if diffusers and Version(diffusers) < MIN_DIFFUSERS:
        report.block(f"diffusers {diffusers} is too old: Kolors image-to-image and the ChatGLM tokenizer fix "
                     f"need diffusers >= {MIN_DIFFUSERS} (pip install -U diffusers)")
    if diffusers and transformers and Version(transformers) >= TOKENIZER_BREAKING_TRANSFORMERS:
        if tokenizer_accepts_padding_side():
            report.line(f"ok: the ChatGLM tokenizer works with transformers {transformers} "
                        f"(releases >= {TOKENIZER_BREAKING_TRANSFORMERS} broke older copies: _pad() padding_side)")
        else:
            report.block(f"transformers {transformers} breaks this ChatGLM tokenizer (_pad() got an unexpected "
                         f"keyword argument 'padding_side'): upgrade diffusers to >= {MIN_DIFFUSERS} or install "
                         f"transformers<{TOKENIZER_BREAKING_TRANSFORMERS}")


def check_patches(report: Report) -> None:
    """Every name the library patches touch is there (else the app refuses to start); versions outside the tested
    ranges are warned about."""
    report.section("Library patches")
    for library in library_patches.LIBRARIES:
        name, touched = library.DISTRIBUTION, library.TOUCHED
        missing = missing_names(touched)
        if missing:
            report.block(missing_message(name, missing))
            continue
        warning = range_warning(name)
        if warning:
            report.warn(warning)
        else:
            count = sum(len(names) for names in touched.values())
            report.line(f"ok: {name} {installed_version(name)} (tested {TESTED[name]}): {count} name"
                        f"{'s' if count != 1 else ''} touched by its patches, all present")


def tokenizer_accepts_padding_side() -> bool:
    """Whether diffusers' ChatGLMTokenizer takes the padding_side argument transformers >= 4.45 passes."""
    try:
        from diffusers.pipelines.kolors import ChatGLMTokenizer
    except ImportError:
        return False
    parameters = inspect.signature(ChatGLMTokenizer._pad).parameters
    return "padding_side" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def check_device(report: Report, settings: Settings) -> str:
    """The device the model would run on and its free memory."""
    import torch

    report.section("Device")
    device = memory.resolve_device(settings.device)
    if settings.device == "cuda" and not torch.cuda.is_available() and not memory.on_zero_gpu():
        report.block("device=cuda but no CUDA GPU is visible to torch "
                     f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use --device auto or cpu")
        return device
    if device == "cuda" and memory.on_zero_gpu():
        report.line("ZeroGPU Space: a GPU is attached to each generation (no memory figure before that)")
    elif device == "cuda":
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name()
        report.line(f"cuda: {name}, {free / memory.GiB:.1f} GiB free of {total / memory.GiB:.1f} GiB "
                    f"(torch built for CUDA {torch.version.cuda})")
    elif device == "mps":
        report.line("mps: Apple GPU (memory shared with the CPU; no free-memory figure)")
    else:
        report.line("cpu: no GPU found; everything runs on the CPU in float32 (minutes per 1024 px image)")
        if settings.text_encoder != "auto" or settings.offload != "auto":
            report.line("text_encoder / offload settings are ignored on the CPU")
    return device


def check_plan(report: Report, settings: Settings, device: str) -> None:
    """The memory plan that would run, and the ladder it may step down."""
    report.section("Memory plan")
    try:
        plan, ladder = memory.make_plan(settings)
    except ValueError as error:
        report.block(str(error))
        return
    report.line(f"chosen: {plan.describe()}")
    if device == "cpu":
        return
    free = memory.free_gpu_bytes() if device == "cuda" and not memory.on_zero_gpu() else None
    report.line("plan                  peak GiB at 1024x1024 (with IP-Adapter)" + ("  fits" if free else ""))
    for item in memory.ladder_for(device, plan.dtype) if len(ladder) > 1 else ladder:
        peak, with_ip = memory.peak_gib(item), memory.peak_gib(item, memory.Features(ip_adapter=True))
        fits = ("  yes" if peak * memory.GiB <= free else "  no") if free else ""
        marker = "*" if item.name == plan.name else " "
        report.line(f"{marker} {item.name:<20}{peak:5.1f} ({with_ip:4.1f}){fits}")
    if free and memory.peak_gib(plan) * memory.GiB > free:
        report.warn(f"{free / memory.GiB:.1f} GiB free is below the estimated peak of plan {plan.name}; "
                    "large images or batches may run out of memory")
    if plan.offload != "none" and not installed_version("accelerate"):
        report.block(f"plan {plan.name} offloads to the CPU, which needs accelerate (pip install accelerate)")


def check_weights(report: Report, settings: Settings) -> None:
    """Which weights are in the Hugging Face cache, what is left to download, and the disk for it."""
    report.section("Weights")
    free = downloads.free_disk_bytes()
    report.line(f"Hugging Face cache: {downloads.cache_dir()} ({free / downloads.GB:.1f} GB free)")
    if settings.model == "tiny":
        report.line("model: tiny random-weight Kolors, built offline on first use (no download)")
        return
    online = None
    sources = [(settings.model, None, False, True), (settings.ip_adapter, settings.ip_adapter_revision, True, False)]
    needed_total = 0
    for source, revision, ip_adapter, required in sources:
        label = "IP-Adapter" if ip_adapter else "model"
        if not downloads.is_hub_repo(source):
            missing = downloads.missing_parts(Path(source), ip_adapter) if Path(source).is_dir() else ["the folder"]
            if missing:
                problem = f"{label} folder {source} lacks {', '.join(missing)}"
                report.block(problem) if required else report.warn(problem + " (the IP-Adapter tab won't work)")
            else:
                report.line(f"{label}: local folder {source}, complete")
            continue
        state = downloads.cache_state(source, revision, ip_adapter)
        if state.complete:
            report.line(f"{label}: {source} cached ({state.cached_bytes / downloads.GB:.1f} GB) in {state.snapshot}")
            continue
        size = max(downloads.download_size(source) - state.cached_bytes, 0)
        what = "not cached" if state.snapshot is None else f"partly cached (missing {', '.join(state.missing)})"
        report.line(f"{label}: {source} {what}; about {size / downloads.GB:.1f} GB to download on first use")
        needed_total += size
        online = downloads.hub_reachable() if online is None else online
        if not online:
            flag = "--ip-adapter" if ip_adapter else "--model"
            message = downloads.offline_message(source, revision, state, downloads.unreachable_reason(), flag)
            report.block(message) if required else report.warn(message)
    if needed_total and needed_total + downloads.DISK_MARGIN > free:
        report.block(downloads.disk_message(settings.model, needed_total))
    elif needed_total:
        report.line(f"disk: {free / downloads.GB:.1f} GB free for {needed_total / downloads.GB:.1f} GB of downloads")


def run_check(settings: Settings, out: TextIO = sys.stdout) -> int:
    """Print the check; 0 when nothing blocks a run, 1 otherwise."""
    report = Report(out)
    print("Kolors Studio check", file=out)
    check_versions(report)
    check_patches(report)
    device = check_device(report, settings)
    check_plan(report, settings, device)
    check_weights(report, settings)
    report.section("Result")
    if report.blockers:
        report.line(f"BLOCKED: {len(report.blockers)} problem(s) above must be fixed before a run")
        return 1
    report.line("OK: ready to run" + (f" ({len(report.warnings)} warning(s))" if report.warnings else ""))
    return 0
