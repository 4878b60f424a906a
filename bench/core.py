"""Measurements 1-3 on the app's core: its overhead, re-rolled seeds, and switching pipelines."""

from __future__ import annotations

import dataclasses
import gc
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from kolors_app.core.config import Settings
from kolors_app.models.embeddings import caches_for
from kolors_app.engine.generation import generate
from kolors_app.core.request import GenerationRequest, Reference
from kolors_app.models.pipeline_manager import PipelineKey, PipelineManager
from kolors_app.core.schedulers import build_scheduler

from .common import ForwardCounter, Row, medians, paired_ratio, quiet, row, timed, tiny_settings

PROMPT = "一只戴着草帽的橘猫, an orange cat in a straw hat, watercolor"
# The overhead is a few percent at most: it needs more pairs than the other measurements.
OVERHEAD_REPEATS = 9
I2I_KEY, IP_KEY, IP_INIT_KEY = PipelineKey("init"), PipelineKey(reference=True), PipelineKey("init", reference=True)


@dataclass(frozen=True)
class Case:
    """A model to measure on, and the request size that keeps one run short but real."""

    label: str
    settings: Settings
    steps: int
    size: int

    @property
    def clock(self) -> str:
        """Ratios use CPU time on the CPU (robust on a busy machine) and wall time on a GPU (CPU time misses it)."""
        return "wall" if self.settings.device == "cuda" else "cpu"


def tiny_case(size: str) -> Case:
    """A tiny model on the CPU; steps chosen for about half a second to three seconds a run on two cores."""
    return Case(size, tiny_settings(size), {"tiny": 4, "text-heavy": 8, "unet-heavy": 3}[size], 256)


def loaded_manager(case: Case, **changes) -> PipelineManager:
    """A manager with its model loaded and tqdm bars off."""
    manager = PipelineManager(dataclasses.replace(case.settings, **changes))
    quiet(manager.load())
    return manager


def request_for(case: Case, seed: int, **changes) -> GenerationRequest:
    """The benchmark's request for this case."""
    values = dict(prompt=PROMPT, width=case.size, height=case.size, num_inference_steps=case.steps,
                  guidance_scale=5.0, seed=seed)
    return GenerationRequest(**{**values, **changes})


def bare_call(pipe, case: Case, seed: int):
    """What a user would write by hand with diffusers, on the same pipeline object and inputs."""
    return pipe(prompt=PROMPT, negative_prompt="", width=case.size, height=case.size,
                num_inference_steps=case.steps, guidance_scale=5.0,
                generator=torch.Generator("cpu").manual_seed(seed)).images[0]


def measure_overhead(case: Case, repeats: int) -> list[Row]:
    """1. One generation through generate() (caches emptied first) against the bare diffusers call."""
    manager = loaded_manager(case)
    pipe, config = manager.pipeline(), dict(manager.scheduler_config)
    caches = caches_for(manager)

    def core(seed):
        caches.clear()
        return generate(manager, request_for(case, seed)).images[0].image

    def fresh_scheduler():
        pipe.scheduler = build_scheduler("Euler", config)  # a user builds it once: not timed

    core_image = core(1)
    fresh_scheduler()
    same = np.array_equal(np.asarray(core_image), np.asarray(bare_call(pipe, case, 1)))  # also a warm-up
    bare, cold, warm = [], [], []
    for index in range(max(repeats, OVERHEAD_REPEATS)):
        # Back to back in a shuffled order, so drifts of a busy machine hit every side alike.
        runs = {"bare": lambda: bare_call(pipe, case, index), "cold": lambda: core(index),
                "warm": lambda: generate(manager, request_for(case, index))}
        order = list(runs)
        random.Random(index).shuffle(order)
        samples = {}
        for name in order:
            fresh_scheduler()  # the app builds one per run; a user builds it once: not timed for bare
            samples[name] = timed(runs[name])
        bare.append(samples["bare"])
        cold.append(samples["cold"])
        warm.append(samples["warm"])
    clock, measure = case.clock, "1 core overhead"
    return [
        row(measure, case.label, "bare diffusers call", medians(bare)),
        row(measure, case.label, "generate(), caches empty", medians(cold), None, "<= 1.03",
            f"same pixels: {same}", clock, paired_ratio(cold, bare, clock)),
        row(measure, case.label, "generate(), prompt cached", medians(warm), None, "", "text encoder skipped",
            clock, paired_ratio(warm, bare, clock)),
    ]


def measure_reseed(case: Case, repeats: int) -> list[Row]:
    """2. Same prompt, new seed: time and text-encoder forward calls against the first call."""
    manager = loaded_manager(case)
    caches = caches_for(manager)
    counter = ForwardCounter(manager.load().text_encoder)
    generate(manager, request_for(case, 0))  # warm-up
    first, again, first_calls, again_calls = [], [], [], []
    for index in range(repeats):
        caches.clear()
        counter.calls = 0
        first.append(timed(lambda: generate(manager, request_for(case, 100 + index))))
        first_calls.append(counter.calls)
        counter.calls = 0
        again.append(timed(lambda: generate(manager, request_for(case, 200 + index))))
        again_calls.append(counter.calls)
    counter.calls = 0
    sweep = timed(lambda: generate(manager, request_for(case, 300, num_images=4)))
    sweep_calls = counter.calls
    counter.close()
    first = medians(first)
    per_image = dataclasses.replace(sweep, wall=sweep.wall / 4, cpu=sweep.cpu / 4)
    measure = "2 same prompt, new seed"
    return [
        row(measure, case.label, "first call", first, note=f"text-encoder forwards: {max(first_calls)}",
            text_encoder_calls=first_calls),
        row(measure, case.label, "new seed", medians(again), first, "0 forwards",
            f"text-encoder forwards: {max(again_calls)}", case.clock, text_encoder_calls=again_calls),
        row(measure, case.label, "batch of 4 new seeds, per image", per_image, first, "0 forwards",
            f"text-encoder forwards: {sweep_calls}", case.clock, text_encoder_calls=[sweep_calls]),
    ]


def measure_ip_reseed(case: Case, repeats: int) -> list[Row]:
    """2b. IP-Adapter with the same reference image and a new seed: image-encoder forward calls."""
    manager = loaded_manager(case)
    encoder = quiet(manager.pipeline(IP_KEY)).image_encoder
    quiet(manager.pipeline())
    caches = caches_for(manager)
    counter = ForwardCounter(encoder)
    reference = Image.new("RGB", (512, 384), (180, 60, 40))
    base = dict(prompt=PROMPT, width=case.size, height=case.size, num_inference_steps=case.steps,
                guidance_scale=6.5)

    def run(seed, image):
        return generate(manager, GenerationRequest(reference=Reference(image), seed=seed, **base))

    run(0, reference)  # warm-up
    first, again, first_calls, again_calls = [], [], [], []
    for seed in range(1, repeats + 1):
        caches.images.clear()  # the prompt stays cached: only the image encoder differs
        counter.calls = 0
        first.append(timed(lambda: run(seed, reference)))
        first_calls.append(counter.calls)
        counter.calls = 0
        again.append(timed(lambda: run(seed + 100, reference.copy())))  # same content, a new object
        again_calls.append(counter.calls)
    counter.close()
    first = medians(first)
    measure = "2 same prompt, new seed"
    return [
        row(measure, case.label, "IP-Adapter, new image", first, note=f"image-encoder forwards: {max(first_calls)}"),
        row(measure, case.label, "IP-Adapter, same image, new seed", medians(again), first, "0 forwards",
            f"image-encoder forwards: {max(again_calls)}", case.clock, image_encoder_calls=again_calls),
    ]


def _tensors(module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters()) | dict(module.named_buffers())


def duplicated_bytes(base_tensors: dict, pipes: list) -> int:
    """Bytes of base weights that some other pipeline holds in memory of its own (0 when all are shared)."""
    total = 0
    for pipe in pipes:
        for component, tensors in base_tensors.items():
            for name, tensor in _tensors(getattr(pipe, component)).items():
                if name in tensors and tensor.data_ptr() != tensors[name].data_ptr():
                    total += tensor.numel() * tensor.element_size()
    return total


def measure_switch(case: Case, repeats: int) -> list[Row]:
    """3. Pipeline switch t2i -> i2i -> IP-Adapter against a cold load, and bytes of weights duplicated."""
    loads = []
    for _ in range(repeats):
        gc.collect()
        manager = PipelineManager(case.settings)
        loads.append(timed(manager.load))
    base = manager.load()
    base_tensors = {name: _tensors(getattr(base, name)) for name in ("unet", "vae", "text_encoder")}
    first_i2i = timed(lambda: manager.pipeline(I2I_KEY))
    first_ip = timed(lambda: manager.pipeline(IP_KEY))
    first_ip_init = timed(lambda: manager.pipeline(IP_INIT_KEY))
    cycle = [PipelineKey(), I2I_KEY, IP_KEY, IP_INIT_KEY]
    switches = [timed(lambda: manager.pipeline(key)) for _ in range(max(repeats, 5)) for key in cycle]
    pipes = [manager.pipeline(key) for key in cycle]
    duplicated = duplicated_bytes(base_tensors, pipes)
    manager.pipeline()
    shared = sum(t.numel() * t.element_size() for tensors in base_tensors.values() for t in tensors.values())
    load, measure, clock = medians(loads), "3 pipeline switch", case.clock
    return [
        row(measure, case.label, "cold load", load),
        row(measure, case.label, "first switch to image-to-image", first_i2i, load, "no load", clock=clock),
        row(measure, case.label, "first IP-Adapter (loads the adapter)", first_ip, load, "",
            "the adapter's own weights, once", clock),
        row(measure, case.label, "first IP-Adapter + init image", first_ip_init, load, "no load", clock=clock),
        row(measure, case.label, "later switches (any mode)", medians(switches), load, "no load", clock=clock),
        row(measure, case.label, "weights duplicated", None, None, "0 bytes", f"{duplicated} of {shared:,} bytes",
            duplicated_bytes=duplicated, shared_bytes=shared),
    ]
