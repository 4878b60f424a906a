"""Memory plans: where each part of Kolors runs, chosen from free GPU memory, and one step down on OOM.

The plans, fastest first. Peaks are for one 1024x1024 image at fp16 (GiB; add 3.4 for the IP-Adapter
on the first four, 1.0 on the offload plans). `auto` takes the first plan whose peak fits the free
GPU memory; on out-of-memory a run steps down one plan and is retried once.

| plan | text encoder | U-Net and VAE | peak GiB (1024x1024, 1 image) | basis |
| --- | --- | --- | --- | --- |
| `gpu` | fp16 on the GPU | on the GPU | 20.6 | published (onediff, 4090 / A100) |
| `te-8bit` | 8-bit (bitsandbytes) on the GPU | on the GPU | 15.9 | published text encoder 8 GB instead of 13 GB |
| `te-4bit` | 4-bit NF4 (bitsandbytes) on the GPU | on the GPU | 12.2 | published text encoder 4 GB instead of 13 GB |
| `te-cpu` | on the CPU (fp32, bf16 under 32 GiB of free RAM) | on the GPU | 8.5 | published peak less the 13 GB text encoder |
| `model-offload` | on the CPU | moved to the GPU one at a time | 6.8 | U-Net 5.2 GB + estimated 1 GiB working memory |
| `sequential-offload` | streamed layer by layer | streamed layer by layer, VAE tiled | 2.5 | estimate |

On the CPU the one plan is `cpu` (everything in float32). On ZeroGPU it is `gpu`. Plans that need
bitsandbytes are skipped where it is not installed. Setting `--text-encoder` or `--offload` pins
that one plan (no step-down). On a GPU, VAE slicing is on for batches and VAE tiling above 1024x1024.
"""  # noqa: E501  The table is plan_table()'s output, row for row.

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

from kolors_app.core.config import Settings
from kolors_app.core.zerogpu import on_zero_gpu

log = logging.getLogger(__name__)

GB, GiB = 10**9, 2**30
# Published sizes (KOLORS.md): text encoder by precision, U-Net and VAE in fp16, in GB.
TEXT_ENCODER_GB = {"gpu": 13.0, "8bit": 8.0, "4bit": 4.0, "cpu": 0.0}
UNET_GB, VAE_GB = 5.2, 0.17
FULL_PEAK_GIB = 20.6
# Estimates that split the rest of the published peak (3.5 GiB): CUDA context and allocator slack, the
# U-Net's working memory, and the fp32 VAE decode at 1024 px (the remainder); a tiled decode needs far less.
CONTEXT_GIB = 1.0
UNET_WORK_GIB = 1.0
VAE_WORK_GIB = FULL_PEAK_GIB - (TEXT_ENCODER_GB["gpu"] + UNET_GB + VAE_GB) * GB / GiB - CONTEXT_GIB
TILED_VAE_GIB = 0.5
LARGEST_LAYER_GIB = 0.5
# Upstream: the IP-Adapter needs "more than 24 GB" where the plain pipeline peaks at 20.6 GiB.
IP_ADAPTER_GIB, IP_ADAPTER_OFFLOADED_GIB = 3.4, 1.0
# Above the native 1024x1024 the VAE decodes in tiles.
TILING_PIXELS = 1024 * 1024
CPU_TEXT_ENCODER_FP32_RAM = 32 * GiB


# Control add-ons, fp16 GB (ControlNets are published as 2.5 GB fp32 files: 1.25 GB in fp16; the inpainting
# U-Net is the base U-Net's size). Replaced by the bytes of the loaded models once they are loaded.
ADDON_GB = {"controlnet": 1.25, "inpainting_unet": UNET_GB}
# A ControlNet runs beside the U-Net at each step; its working memory is about half the U-Net's (estimate).
CONTROLNET_WORK_SHARE = 0.5


def learn_sizes(**sizes: int) -> None:
    """Record the bytes of loaded add-ons (controlnet=..., inpainting_unet=...), for the plans that follow."""
    for name, size in sizes.items():
        ADDON_GB[name] = size / GB


@dataclass(frozen=True)
class Features:
    """What a run asks of memory: image size, batch, IP-Adapter, ControlNets, inpainting U-Net."""

    width: int = 1024
    height: int = 1024
    num_images: int = 1
    ip_adapter: bool = False
    controlnets: int = 0
    inpainting_unet: bool = False

    @classmethod
    def of(cls, request) -> "Features":
        """The features of a generation request."""
        inpainting = request.inpaint is not None and request.inpaint.model == "inpainting"
        return cls(request.width, request.height, request.num_images, request.reference is not None,
                   len(request.controls), inpainting)


@dataclass(frozen=True)
class Plan:
    """Where and how the model runs: text encoder placement, offload, device and dtype."""

    name: str
    text_encoder: str = "gpu"
    offload: str = "none"
    device: str = "cuda"
    dtype: torch.dtype = torch.float16
    vae_tiling: bool = False

    def describe(self) -> str:
        """One line for the status bar and the logs."""
        dtype = str(self.dtype).removeprefix("torch.")
        if self.device == "cpu":
            return f"plan {self.name}: everything on the CPU, {dtype}"
        encoder = {"gpu": f"{dtype} on {self.device}", "8bit": "8-bit", "4bit": "4-bit", "cpu": "on the CPU"}
        offload = {"none": f"on {self.device}", "model": "model offload", "sequential": "sequential offload"}
        return (f"plan {self.name}: text encoder {encoder[self.text_encoder]}, "
                f"U-Net and VAE {offload[self.offload]} ({dtype})")

    def needs_bitsandbytes(self) -> bool:
        """Whether the text encoder is quantized."""
        return self.text_encoder in ("8bit", "4bit")


LADDER = (
    Plan("gpu"),
    Plan("te-8bit", text_encoder="8bit"),
    Plan("te-4bit", text_encoder="4bit"),
    Plan("te-cpu", text_encoder="cpu"),
    Plan("model-offload", text_encoder="cpu", offload="model"),
    Plan("sequential-offload", offload="sequential", vae_tiling=True),
)


# Where each plan's peak comes from (the README table and the docstring above say the same).
BASIS = {
    "gpu": "published (onediff, 4090 / A100)",
    "te-8bit": "published text encoder 8 GB instead of 13 GB",
    "te-4bit": "published text encoder 4 GB instead of 13 GB",
    "te-cpu": "published peak less the 13 GB text encoder",
    "model-offload": "U-Net 5.2 GB + estimated 1 GiB working memory",
    "sequential-offload": "estimate",
}
WHERE = {
    "gpu": ("fp16 on the GPU", "on the GPU"),
    "te-8bit": ("8-bit (bitsandbytes) on the GPU", "on the GPU"),
    "te-4bit": ("4-bit NF4 (bitsandbytes) on the GPU", "on the GPU"),
    "te-cpu": ("on the CPU (fp32, bf16 under 32 GiB of free RAM)", "on the GPU"),
    "model-offload": ("on the CPU", "moved to the GPU one at a time"),
    "sequential-offload": ("streamed layer by layer", "streamed layer by layer, VAE tiled"),
}


def plan_table() -> str:
    """The plans as a Markdown table for the README, peaks computed by peak_gib."""
    rows = ["| plan | text encoder | U-Net and VAE | peak GiB (1024x1024, 1 image) | basis |",
            "| --- | --- | --- | --- | --- |"]
    for plan in LADDER:
        encoder, rest = WHERE[plan.name]
        rows.append(f"| `{plan.name}` | {encoder} | {rest} | {peak_gib(plan):.1f} | {BASIS[plan.name]} |")
    return "\n".join(rows) + "\n"


def uses_vae_tiling(plan: Plan, features: Features) -> bool:
    """Tile the VAE decode in plans that always do, and above the native size."""
    return plan.vae_tiling or features.width * features.height > TILING_PIXELS


def peak_gib(plan: Plan, features: Features = Features()) -> float:
    """Estimated peak GPU memory of one run under this plan (0 on the CPU)."""
    if plan.device == "cpu":
        return 0.0
    scale = features.width * features.height / TILING_PIXELS
    unet_work = UNET_WORK_GIB * scale * features.num_images
    # VAE slicing decodes a batch one image at a time, so only the size counts.
    vae_work = TILED_VAE_GIB if uses_vae_tiling(plan, features) else VAE_WORK_GIB * scale
    encoder = TEXT_ENCODER_GB[plan.text_encoder] * GB / GiB
    unet, vae = UNET_GB * GB / GiB, VAE_GB * GB / GiB
    if plan.offload == "none":
        peak = encoder + unet + vae + max(unet_work, vae_work)
    elif plan.offload == "model":
        peak = max(encoder, unet + unet_work, vae + vae_work)
    else:
        peak = LARGEST_LAYER_GIB + max(unet_work, vae_work)
    if features.ip_adapter:
        peak += IP_ADAPTER_GIB if plan.offload == "none" else IP_ADAPTER_OFFLOADED_GIB
    peak += addon_gib(plan, features, unet_work)
    return CONTEXT_GIB + peak


def addon_gib(plan: Plan, features: Features, unet_work: float) -> float:
    """What ControlNets and the inpainting U-Net add to a plan's peak (weights resident, or one at a time)."""
    controlnet = ADDON_GB["controlnet"] * GB / GiB
    weights = features.controlnets * controlnet
    # The inpainting U-Net replaces the base one in the run, but both stay loaded (the base serves other modes).
    weights += ADDON_GB["inpainting_unet"] * GB / GiB if features.inpainting_unet else 0.0
    work = CONTROLNET_WORK_SHARE * unet_work if features.controlnets else 0.0
    if plan.offload == "none":
        return weights + work
    if plan.offload == "model":
        # Offloaded models come to the GPU one at a time: one ControlNet beside the U-Net's working memory.
        return (controlnet if features.controlnets else 0.0) + work
    return work


def addon_budget_bytes(plan: Plan) -> int | None:
    """GPU bytes the loaded ControlNets may hold: the free memory beyond a 1024 px run's peak; None off CUDA."""
    if plan.device != "cuda" or not torch.cuda.is_available():
        return None
    _free, total = torch.cuda.mem_get_info()
    return max(0, int(total - peak_gib(plan) * GiB))


def choose_plan(free_bytes: int, features: Features = Features(), ladder=LADDER) -> Plan:
    """The first plan of the ladder whose peak fits in free_bytes; the last one if none does."""
    for plan in ladder:
        if peak_gib(plan, features) * GiB <= free_bytes:
            return plan
    return ladder[-1]


def next_plan(plan: Plan, ladder=LADDER) -> Plan | None:
    """The plan after this one in the ladder; None after the last."""
    names = [item.name for item in ladder]
    if plan.name not in names or names.index(plan.name) + 1 == len(names):
        return None
    return ladder[names.index(plan.name) + 1]


def bitsandbytes_available() -> bool:
    """Whether the 8-bit and 4-bit text encoder plans can run."""
    return importlib.util.find_spec("bitsandbytes") is not None


def resolve_device(choice: str) -> str:
    """`auto` picks CUDA, then Apple's MPS, then the CPU."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available() or on_zero_gpu():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(choice: str, device: str) -> torch.dtype:
    """`auto` is float16 on an accelerator and float32 on the CPU (fp16 matmuls there are slow)."""
    if choice == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    return getattr(torch, choice)


def free_gpu_bytes() -> int:
    """Free memory of the current CUDA device, 0 without one."""
    if not torch.cuda.is_available():
        return 0
    free, _total = torch.cuda.mem_get_info()
    return free


def ladder_for(device: str, dtype: torch.dtype, with_bitsandbytes: bool | None = None) -> list[Plan]:
    """The plans that can run on this device, fastest first."""
    if device == "cpu":
        return [Plan("cpu", text_encoder="gpu", device="cpu", dtype=dtype)]
    if with_bitsandbytes is None:
        with_bitsandbytes = device == "cuda" and bitsandbytes_available()
    return [dataclasses.replace(plan, device=device, dtype=dtype) for plan in LADDER
            if with_bitsandbytes or not plan.needs_bitsandbytes()]


def make_plan(settings: Settings, free_bytes: int | None = None,
              features: Features = Features()) -> tuple[Plan, list[Plan]]:
    """The plan for these settings on this machine, and the plans it may step down to (itself first)."""
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    ladder = ladder_for(device, dtype)
    if device == "cpu":
        return ladder[0], ladder
    if settings.text_encoder != "auto" or settings.offload != "auto":
        return (pinned := pinned_plan(settings, ladder)), [pinned]
    if on_zero_gpu():
        # ZeroGPU attaches a large GPU slice to each call and supports no offload.
        return ladder[0], ladder[:1]
    if device != "cuda":
        # No free-memory figure on MPS (memory is shared): start at the top and step down on OOM.
        return ladder[0], ladder
    free = free_gpu_bytes() if free_bytes is None else free_bytes
    plan = choose_plan(free, features, ladder)
    return plan, ladder[ladder.index(plan):]


def pinned_plan(settings: Settings, ladder: list[Plan]) -> Plan:
    """The one plan that --text-encoder / --offload ask for (`auto` in one of them means gpu / none)."""
    text_encoder = "gpu" if settings.text_encoder == "auto" else settings.text_encoder
    offload = "none" if settings.offload == "auto" else settings.offload
    if text_encoder in ("8bit", "4bit") and not (ladder[0].device == "cuda" and bitsandbytes_available()):
        raise ValueError(f"text_encoder={text_encoder}: needs a CUDA GPU and bitsandbytes (pip install bitsandbytes)")
    for plan in ladder:
        if (plan.text_encoder, plan.offload) == (text_encoder, offload):
            return plan
    base = ladder[0]
    return dataclasses.replace(base, name=f"text-encoder-{text_encoder}+offload-{offload}",
                               text_encoder=text_encoder, offload=offload)


class OutOfGPUMemory(RuntimeError):
    """A run ran out of GPU memory and no smaller plan is left to step down to; the message says what to change."""


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a RuntimeError that says out of memory (MPS, cuDNN, cuBLAS)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def run_with_step_down(manager, call: Callable[[], Any], features: Features = Features()) -> tuple[Any, str | None]:
    """Run `call` (it fetches its pipeline from the manager); on out-of-memory free, step down and retry once.

    Returns the call's result and, when it stepped down, a note for the user naming the plan that ran.
    """
    manager.configure_vae(features)
    ok, result = _attempt(manager, call)
    if ok:
        return result, None
    failed = result
    # Out of the except block: the traceback and the tensors its frames held are gone now.
    manager.release_memory()
    plan = manager.step_down(failed)
    manager.configure_vae(features)
    note = f"Out of GPU memory with plan {failed.name}: retried with {plan.describe()}"
    log.warning(note)
    ok, result = _attempt(manager, call)
    if not ok:
        manager.release_memory()
        raise OutOfGPUMemory(f"Out of GPU memory with plan {failed.name} and again with plan {plan.name}; "
                             "lower width/height or num_images")
    return result, note


def _attempt(manager, call: Callable[[], Any]) -> tuple[bool, Any]:
    """Run once: (True, result), or (False, the plan that ran out of memory)."""
    plan = manager.plan
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        result = call()
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        log.warning("out of memory with plan %s: %s", plan.name, str(error).splitlines()[0] if str(error) else "")
        return False, plan
    manager.record_peak()
    return True, result
