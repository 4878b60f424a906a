"""Run one request: validate, seed, call the pipeline with progress and stop, collect the results."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from kolors_app.creative import part as creative
from kolors_app.control import inpainting
from kolors_app.hub.downloads import ModelUnavailable
from kolors_app.models.embeddings import EmbeddingCaches, caches_for
from kolors_app.control.inpainting import Canvas
from kolors_app.control.preprocessors import control_map
from kolors_app.core.request import (MAX_SEED, MODEL_NAME, GeneratedImage, GenerationRequest, GenerationResult,
                                     concrete_seed)
from kolors_app.core.errors import ValidationError
from kolors_app.core.validation import validate
from kolors_app.media.images import fit_image
from kolors_app.models.memory import Features, run_with_step_down
from kolors_app.models.pipeline_manager import PipelineKey, PipelineManager
from kolors_app.media.previews import latents_to_preview
from kolors_app.core.schedulers import build_scheduler
from kolors_app.patches.diffusers import pooled_embeds_forwarded

ProgressCallback = Callable[[int, int], None]
PreviewCallback = Callable[[int, Image.Image], None]


class GenerationStopped(Exception):
    """Raised inside the step callback to end a run at once, without decoding half-done latents.

    `previews`: one cheap preview of each image's latents where the run stopped (A1111 answers those).
    """

    def __init__(self, previews: list[Image.Image] | None = None):
        super().__init__("stopped")
        self.previews = previews or []


@dataclass
class RunControl:
    """How the caller follows and stops a run."""

    on_progress: ProgressCallback | None = None
    on_preview: PreviewCallback | None = None
    preview_every: int = 0
    stop: threading.Event | None = None
    # When set, previews are decided by the clock: one when this many seconds passed since the last one.
    preview_seconds: float | None = None


def batch_seeds(seed: int, count: int) -> list[int]:
    """Image i of a batch uses seed + i (wrapping inside the seed range)."""
    return [(seed + i) % (MAX_SEED + 1) for i in range(count)]


def prompt_warnings(manager: PipelineManager, request: GenerationRequest) -> list[str]:
    """Say, never silently, when a prompt is longer than the text encoder reads."""
    limit = manager.settings.limits.max_prompt_tokens
    warnings = []
    for name in ("prompt", "negative_prompt"):
        text = getattr(request, name)
        if text:
            count = manager.tokenizer_length(text)
            if count > limit:
                warnings.append(f"{name} is {count} tokens long; only the first {limit} were used")
    return warnings


def pipeline_key(request: GenerationRequest) -> PipelineKey:
    """The pipeline this request's parts need."""
    base = "mask" if request.inpaint is not None else ("init" if request.init is not None else "text")
    return PipelineKey(base=base, reference=request.reference is not None,
                       controls=tuple(unit.type for unit in request.controls),
                       inpainting_unet=request.inpaint is not None and request.inpaint.model == "inpainting")


@dataclass
class PreparedImages:
    """A request's images made ready before the model runs: the inpainting canvas and one map per control unit."""

    canvas: Canvas | None = None
    maps: list[Image.Image] = field(default_factory=list)


def prepare_images(manager: PipelineManager, request: GenerationRequest) -> PreparedImages:
    """Outpainting canvas, blurred mask and control maps (preprocessors run here, outside the GPU lock)."""
    limits = manager.settings.limits
    canvas = None
    if request.inpaint is not None:
        canvas = inpainting.prepare(request.init.image, request.inpaint, request.width, request.height,
                                    limits.min_size, limits.max_size)
        if not inpainting.has_masked_pixels(canvas.mask):
            raise ValidationError("mask", "is all black: paint white where the image should change")
    # Maps at the size the pipeline crops or resizes them from: the canvas when inpainting.
    size = canvas.image.size if canvas is not None else (request.width, request.height)
    maps = [control_map(unit, fit_image(unit.image.convert("RGB"), *size), manager.estimators)
            for unit in request.controls]
    return PreparedImages(canvas, maps)


def control_arguments(request: GenerationRequest, maps: list[Image.Image]) -> dict:
    """Maps, scales and step ranges of the control units (lists for several, as MultiControlNetModel takes)."""
    if not maps:
        return {}
    units = request.controls
    values = {"controlnet_conditioning_scale": [unit.scale for unit in units],
              "control_guidance_start": [unit.start for unit in units],
              "control_guidance_end": [unit.end for unit in units]}
    if len(units) == 1:
        values = {name: value[0] for name, value in values.items()}
    # The text-to-image ControlNet pipeline calls the maps `image`; the others use `image` for the init image.
    values["image" if request.init is None else "control_image"] = maps if len(maps) > 1 else maps[0]
    return values


def pipeline_arguments(request: GenerationRequest, seeds: list[int], conditioning: dict,
                       prepared: PreparedImages = PreparedImages()) -> dict:
    """The keyword arguments of the diffusers call: the request's settings plus ready embeddings."""
    canvas = prepared.canvas
    arguments = dict(
        width=canvas.width if canvas else request.width,
        height=canvas.height if canvas else request.height,
        num_inference_steps=request.num_inference_steps,
        guidance_scale=request.guidance_scale,
        # The embeddings already hold one row per image, so the pipeline sees a batch of one prompt each.
        num_images_per_prompt=1,
        # CPU generators make a seed give the same image on every device.
        generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
        **conditioning,
    )
    if canvas is not None:
        arguments.update(image=canvas.image, mask_image=canvas.mask, strength=request.init.strength)
        if request.inpaint.area == "masked":
            arguments["padding_mask_crop"] = request.inpaint.padding
    elif request.init is not None:
        arguments.update(image=fit_image(request.init.image, request.width, request.height),
                         strength=request.init.strength)
    arguments.update(control_arguments(request, prepared.maps))
    return arguments


def inpainting_model_available(manager: PipelineManager, request: GenerationRequest, warnings: list[str]):
    """The request as it will run: the base U-Net (said in a warning) when Kolors-Inpainting cannot be had."""
    if request.inpaint is None or request.inpaint.model != "inpainting":
        return request
    if request.reference is not None:
        raise ValidationError("inpaint_model", "'inpainting' does not take an IP-Adapter reference yet; use 'base'")
    try:
        manager.inpainting_unet()
    except ModelUnavailable as error:
        warnings.append(f"The inpainting model is not available ({error}); the base U-Net inpainted instead")
        return dataclasses.replace(request, inpaint=dataclasses.replace(request.inpaint, model="base"))
    return request


def conditioning(caches: EmbeddingCaches, pipe, request: GenerationRequest, text_pipe=None) -> dict:
    """Prompt (and reference image) embeddings, from the caches or computed once by the pipeline.

    text_pipe: the Kolors pipeline whose encode_prompt reads ChatGLM (the SDXL pipelines' expects CLIP).
    """
    count = request.num_images
    arguments = caches.prompt_arguments(text_pipe or pipe, request.prompt, request.negative_prompt, count,
                                        request.guidance_scale)
    if request.reference is not None:
        arguments.update(caches.ip_adapter_arguments(pipe, request.reference.image, request.guidance_scale))
    return arguments


def _preview_due(control: RunControl, step: int, last: list[float]) -> bool:
    if control.preview_seconds is None:
        return bool(control.preview_every) and step % control.preview_every == 0
    now = time.monotonic()
    if now - last[0] < control.preview_seconds:
        return False
    last[0] = now
    return True


def _step_callback(control: RunControl):
    last_preview = [time.monotonic()]

    def on_step_end(pipe, step, _timestep, tensors):
        total = pipe.num_timesteps
        if control.stop is not None and control.stop.is_set():
            raise GenerationStopped([latents_to_preview(latents) for latents in tensors["latents"]])
        if control.on_progress:
            control.on_progress(step + 1, total)
        if control.on_preview and step + 1 < total and _preview_due(control, step + 1, last_preview):
            control.on_preview(step + 1, latents_to_preview(tensors["latents"][0]))
        return tensors

    return on_step_end


def generate(manager: PipelineManager, request: GenerationRequest,
             control: RunControl | None = None) -> GenerationResult:
    """Generate the images of one request; raises ValidationError before any model work."""
    request = validate(request, manager.settings.limits)
    creative.fetch_loras(manager, request)  # Hub LoRAs, before the run takes the model
    return run_validated(manager, request, control)


def run_validated(manager: PipelineManager, request: GenerationRequest,
                  control: RunControl | None = None) -> GenerationResult:
    """Generate the images of a request the job engine has validated (names of LoRAs and styles checked here)."""
    control = control or RunControl()
    started = time.perf_counter()
    manager.load()
    warnings = prompt_warnings(manager, request)
    request = inpainting_model_available(manager, request, warnings)
    staged = prepare_images(manager, request)  # init/mask canvas and control maps
    seeds = batch_seeds(concrete_seed(request.seed), request.num_images)
    prepared = creative.prepare(manager, request, seeds)  # styles, {a|b}, <lora:...>: names checked here
    with manager.run_lock:
        if control.stop is not None and control.stop.is_set():
            return GenerationResult([], request, warnings, stopped=True)
        # --- OOM step-down (kolors_app/models/memory.py) ---
        # The pipeline is fetched inside run_pipeline, as a step-down rebuilds it.
        def run_pipeline():
            pipe = manager.pipeline(pipeline_key(request))
            pipe.scheduler = build_scheduler(request.scheduler, manager.scheduler_config)
            if request.reference is not None:
                pipe.set_ip_adapter_scale(request.reference.scale)
            creative.apply_loras(manager, prepared, pipe)
            text_conditioning = functools.partial(conditioning, text_pipe=manager.load())
            arguments = pipeline_arguments(request, seeds, creative.conditioning(
                caches_for(manager), pipe, request, prepared, text_conditioning), staged)
            with pooled_embeds_forwarded(pipe, arguments):
                return creative.run(manager, pipe, request, prepared, arguments, seeds, _step_callback(control),
                                    second_pass=functools.partial(hires_pipeline, manager, request, arguments))

        try:
            output, plan_note = run_with_step_down(manager, run_pipeline, Features.of(request))
        except GenerationStopped as stop:
            manager.release_memory()  # also takes offloaded models off the GPU
            return GenerationResult([], request, warnings, stopped=True, seconds=time.perf_counter() - started,
                                    previews=stop.previews)
        if plan_note:
            warnings.append(plan_note)
        # --- end OOM step-down ---
    pictures = output.images
    if staged.canvas is not None:
        pictures = [inpainting.paste_back(image, staged.canvas, request.inpaint.keep_unmasked) for image in pictures]
    images = [GeneratedImage(image, seed,
                             {**image_parameters(request, seed, image), **creative.image_values(prepared, i)})
              for i, (image, seed) in enumerate(zip(pictures, seeds))]
    return GenerationResult(images, request, warnings, seconds=time.perf_counter() - started,
                            control_maps=staged.maps)


@contextlib.contextmanager
def hires_pipeline(manager: PipelineManager, request: GenerationRequest, arguments: dict):
    """The image-to-image pipeline of a hires fix's second pass, with the request's sampler."""
    pipe = manager.pipeline(PipelineKey(base="init", reference=request.reference is not None))
    pipe.scheduler = build_scheduler(request.scheduler, manager.scheduler_config)
    with pooled_embeds_forwarded(pipe, arguments):
        yield pipe


def image_parameters(request: GenerationRequest, seed: int, image: Image.Image) -> dict:
    """Everything needed to make this one image again."""
    parameters = request.to_dict()
    parameters.update(seed=seed, num_images=1, width=image.width, height=image.height, model=MODEL_NAME)
    return parameters


__all__ = ["generate", "RunControl", "GenerationStopped", "ValidationError", "batch_seeds"]
