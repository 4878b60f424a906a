"""The /sdapi/v1/ and /controlnet/ routes: same validation, limits and GPU slot as the UI."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any, Callable

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from PIL import Image
from pydantic import ValidationError as PydanticError

from kolors_app.api.a1111.payloads import (CONTROL_MODULES, MODEL_TITLE, NO_UPSCALER, SCHEDULE_TYPES, Img2Img, Txt2Img,
                                           a1111_error, build_request, check_unsupported, enabled_units, scheduler_for)
from kolors_app.api.waiting import (credentials_check, error_response, outcome_of, owner_dependency,
                                    refusal_response)
from kolors_app.core.request import MAX_SEED, GeneratedImage, concrete_seed
from kolors_app.core.errors import ValidationError
from kolors_app.core.json_body import parse_json
from kolors_app.core.schedulers import SCHEDULER_NAMES
from kolors_app.creative.part import tools_for
from kolors_app.creative.upscalers import LATENT
from kolors_app.engine.engine import JobHandle, QueueFull
from kolors_app.engine.generation import batch_seeds, image_parameters
from kolors_app.engine.jobs import A1111, GENERATE, Job, JobOutcome, Owner
from kolors_app.media import png_encoder
from kolors_app.media.images import decode_data_url
from kolors_app.metadata.infotext import format_parameters, split_parameters
from kolors_app.metadata.png_chunks import read_image_parameters
from kolors_app.outputs.result_files import encode_png

log = logging.getLogger(__name__)
PREVIEW_SECONDS = 1.0
# A body holds at most a few images of --max-upload-bytes each, base64-encoded (4/3 larger).
MAX_IMAGES_PER_BODY = 6
CONTROLNET_MODELS = ("Kolors-ControlNet-Canny", "Kolors-ControlNet-Depth", "Kolors-ControlNet-Pose")


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body, refused past `limit` bytes before it is all read."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is larger than {limit // 1024 // 1024} MB")
        chunks.append(chunk)
    try:
        return parse_json(b"".join(chunks) or b"{}")
    except ValidationError as error:
        raise HTTPException(422, str(error)) from None


def info_json(body: Txt2Img, seeds: list[int], images: list, job: JobHandle, warnings: list[str] = ()) -> str:
    """A1111's `info`: a JSON string with the seeds and the infotext of every image; `warnings` are this server's
    notes (what was ignored or replaced, as A1111 would have done)."""
    first = images[0].parameters if images else {}
    return json.dumps({
        "prompt": body.prompt, "all_prompts": [body.prompt] * len(seeds),
        "negative_prompt": body.negative_prompt, "all_negative_prompts": [body.negative_prompt] * len(seeds),
        "seed": seeds[0], "all_seeds": seeds, "subseed": seeds[0], "all_subseeds": seeds, "subseed_strength": 0,
        "width": first.get("width", body.width), "height": first.get("height", body.height),
        "sampler_name": body.sampler_name or "Euler", "scheduler": body.scheduler or "Automatic",
        "cfg_scale": body.cfg_scale, "steps": body.steps, "batch_size": body.batch_size, "n_iter": body.n_iter,
        "restore_faces": False, "face_restoration_model": None, "sd_model_name": MODEL_TITLE, "sd_model_hash": None,
        "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": getattr(body, "denoising_strength", None), "extra_generation_params": {},
        "index_of_first_image": 0, "infotexts": [format_parameters(item.parameters) for item in images],
        "styles": [], "job_timestamp": job.timestamp, "clip_skip": 1, "is_using_inpainting_conditioning": False,
        "interrupted": job.interrupted, "version": "kolors-studio", "warnings": list(warnings),
    }, ensure_ascii=False)


def unfinished_images(outcome: JobOutcome) -> list[GeneratedImage]:
    """The images of stopped or skipped iterations as A1111 answers them: where their latents were when stopped
    (here a latent preview at the image's size), so that `images[0]` exists for an interrupted call."""
    unfinished = []
    for result in outcome.results:
        if not result.stopped:
            continue
        request = result.request
        for seed, preview in zip(batch_seeds(request.seed, request.num_images), result.previews):
            image = preview.resize((request.width, request.height), Image.Resampling.LANCZOS)
            unfinished.append(GeneratedImage(image, seed, {**image_parameters(request, seed, image),
                                                           "interrupted": True}))
    return unfinished


def body_limit_of(limits) -> int:
    """The largest JSON body taken: MAX_IMAGES_PER_BODY images in base64 at the upload limit, and 1 MB more."""
    return limits.max_upload_bytes * 4 // 3 * MAX_IMAGES_PER_BODY + 1024 * 1024


def a1111_router(ctx, public_message: Callable[[Exception], str] =
                 lambda error: f"generation failed ({type(error).__name__})", logins=None) -> APIRouter:
    """Every A1111 route, bound to the app's context (settings, manager, outputs, the job engine).

    `public_message` is what a caller may see of a failed run (the app passes the page's own wording); `logins`
    is the app's login back-off, shared with its other entrances (by default one of the router's own).
    """
    settings, limits, engine = ctx.settings, ctx.settings.limits, ctx.engine
    check = credentials_check(settings, logins)
    router = APIRouter(dependencies=[Depends(check)])
    caller = owner_dependency(settings, check)
    body_limit = body_limit_of(limits)

    def answer(body: Txt2Img, seeds: list[int], handle: JobHandle, outcome: JobOutcome, notes: list[str]) -> dict:
        images = outcome.images + unfinished_images(outcome)
        if len(images) > len(outcome.images):
            notes = notes + ["interrupted: the unfinished images are previews of their latents where they stopped"]
        encoded = [encode_png(item.image, item.parameters) for item in images]
        if body.save_images and ctx.saver is not None:
            for item, data in zip(images, encoded):
                ctx.saver.save(item.parameters, data)
        echoed = body.model_dump(exclude={"init_images", "mask"})
        return {"images": [base64.b64encode(data).decode("ascii") for data in encoded] if body.send_images else [],
                "parameters": echoed, "info": info_json(body, seeds, images, handle, notes + outcome.warnings)}

    async def generate_route(request: Request, model: type[Txt2Img], owner: Owner):
        try:
            body = model.model_validate(await read_json(request, body_limit))
        except PydanticError as error:
            first = error.errors()[0]
            name = ".".join(str(part) for part in first["loc"]) or "body"
            return error_response(422, "Invalid input", f"{name}: {first['msg']}", name)
        try:
            notes = check_unsupported(body, saving=ctx.saver is not None)
            if not 1 <= body.batch_size <= limits.max_images:
                raise ValidationError("batch_size", f"must be from 1 to {limits.max_images}, got {body.batch_size}",
                                      code="out_of_range", allowed={"min": 1, "max": limits.max_images})
            if body.n_iter < 1 or body.n_iter * body.batch_size > limits.max_images:
                raise ValidationError("n_iter", f"n_iter x batch_size must be from 1 to {limits.max_images}, "
                                                f"got {body.n_iter} x {body.batch_size}", code="out_of_range",
                                      allowed={"min": 1, "max": limits.max_images})
            scheduler, schedule_notes = scheduler_for(body.sampler_name or body.sampler_index, body.scheduler)
            if body.seed != -1 and not 0 <= body.seed <= MAX_SEED:
                raise ValidationError("seed", f"must be -1 (random) or from 0 to {MAX_SEED}, got {body.seed}",
                                      code="out_of_range", allowed={"min": -1, "max": MAX_SEED})
            seeds = batch_seeds(concrete_seed(None if body.seed == -1 else body.seed), body.n_iter * body.batch_size)
            unit_indexes = [index for index, _unit in enabled_units(body)]
        except ValidationError as error:  # these already name the A1111 field
            return refusal_response(error)
        try:
            requests = [build_request(body, scheduler, seeds[number * body.batch_size], limits)
                        for number in range(body.n_iter)]
            # One job for every iteration: the engine validates and costs them together (n_iter x batch x steps).
            handle = engine.submit(Job(GENERATE, owner, A1111, requests, preview_seconds=PREVIEW_SECONDS), follow=False)
            outcome = await outcome_of(handle, request)
            return await anyio.to_thread.run_sync(answer, body, seeds, handle, outcome, notes + schedule_notes)
        except QueueFull as error:
            return error_response(503, "Queue is full", str(error))
        except ValidationError as error:  # also the core's own checks (LoRA and upscaler names) before model work
            return refusal_response(a1111_error(error, unit_indexes))
        except Exception as error:  # logged in full by the executor (or here), short for the caller
            log.error("A1111 API generation failed: %s", type(error).__name__)
            return error_response(500, type(error).__name__, public_message(error))

    @router.post("/sdapi/v1/txt2img")
    async def txt2img(request: Request, owner: Owner = Depends(caller)):
        return await generate_route(request, Txt2Img, owner)

    @router.post("/sdapi/v1/img2img")
    async def img2img(request: Request, owner: Owner = Depends(caller)):
        return await generate_route(request, Img2Img, owner)

    @router.get("/sdapi/v1/progress")
    def progress(skip_current_image: bool = False, owner: Owner = Depends(caller)):
        """The caller's own job: another user's progress and previews are not shown."""
        job = engine.current(owner)
        if job is None:
            return {"progress": 0.0, "eta_relative": 0.0, "state": {"skipped": False, "interrupted": False,
                    "job": "", "job_count": 0, "job_timestamp": "0", "job_no": 0, "sampling_step": 0,
                    "sampling_steps": 0}, "current_image": None, "textinfo": None}
        done = job.progress()
        spent = time.monotonic() - job.submitted
        image = None
        if job.preview is not None and not skip_current_image:
            image = base64.b64encode(png_encoder.encode_png(job.preview)).decode("ascii")
        return {"progress": round(done, 4), "eta_relative": round(spent / done - spent, 2) if done > 0 else 0.0,
                "state": {"skipped": job.skipped, "interrupted": job.interrupted, "job": f"job {job.index + 1}",
                          "job_count": job.count, "job_timestamp": job.timestamp, "job_no": job.index,
                          "sampling_step": job.step, "sampling_steps": job.total or job.job.steps},
                "current_image": image, "textinfo": None}

    @router.post("/sdapi/v1/interrupt")
    def interrupt(owner: Owner = Depends(caller)):
        """End the caller's job at its next step; its finished iterations are still answered."""
        engine.stop(owner)
        return {}

    @router.post("/sdapi/v1/skip")
    def skip(owner: Owner = Depends(caller)):
        engine.skip(owner)
        return {}

    @router.get("/sdapi/v1/options")
    def get_options():
        return {"sd_model_checkpoint": MODEL_TITLE, "samples_format": "png", "sd_checkpoint_hash": None,
                "CLIP_stop_at_last_layers": 1, "save_images": ctx.saver is not None}

    @router.post("/sdapi/v1/options")
    async def set_options(request: Request):
        values = await read_json(request, 1024 * 1024)
        if not isinstance(values, dict):
            return error_response(422, "Invalid input", "body: must be an object of options", "body")
        checkpoint = values.get("sd_model_checkpoint")
        if checkpoint not in (None, "", MODEL_TITLE):  # Open WebUI's first config save posts ""
            return error_response(422, "Invalid input", f"sd_model_checkpoint: must be {MODEL_TITLE!r} (the only "
                                                        f"model here); got {checkpoint!r}", "sd_model_checkpoint")
        return None  # other options are accepted and ignored: this server has no global settings to change

    @router.get("/sdapi/v1/sd-models")
    def sd_models():
        return [{"title": MODEL_TITLE, "model_name": MODEL_TITLE, "hash": None, "sha256": None,
                 "filename": "Kwai-Kolors/Kolors-diffusers", "config": None}]

    @router.get("/sdapi/v1/samplers")
    def samplers():
        return [{"name": name, "aliases": [], "options": {}} for name in SCHEDULER_NAMES]

    @router.get("/sdapi/v1/schedulers")
    def schedulers():
        return [{"name": key, "label": label, "aliases": None, "default_rho": -1, "need_inner_model": False}
                for key, label in SCHEDULE_TYPES.items()]

    @router.get("/sdapi/v1/upscalers")
    def upscalers():
        """The pixel upscalers for hr_upscaler: A1111's "None" first, Lanczos, the folder's models; no paths."""
        library = tools_for(ctx.manager).upscalers
        return [{"name": name, "model_name": name, "model_path": None, "model_url": None, "scale": None}
                for name in (NO_UPSCALER, *library.names(latent=False))]

    @router.get("/sdapi/v1/sd-vae")
    def sd_vae():
        """A1111's VAE files besides the model's own: none here (Kolors' VAE is part of the model)."""
        return []

    @router.get("/sdapi/v1/sd-modules")
    def sd_modules():
        """Forge's extra modules (VAEs, text encoders): none here."""
        return []

    @router.get("/sdapi/v1/latent-upscale-modes")
    def latent_upscale_modes():
        return [{"name": LATENT}]

    @router.get("/sdapi/v1/loras")
    def loras():
        """The LoRA folder's LoRAs, by the name `<lora:name:weight>` takes; no server paths."""
        return [{"name": name, "alias": name, "path": None, "metadata": {}}
                for name in tools_for(ctx.manager).loras.names()]

    @router.post("/sdapi/v1/refresh-loras")
    def refresh_loras():
        tools_for(ctx.manager).loras.refresh()
        return None

    @router.get("/sdapi/v1/scripts")
    def scripts():
        return {"txt2img": [], "img2img": []}

    @router.post("/sdapi/v1/png-info")
    async def png_info(request: Request):
        values = await read_json(request, limits.max_upload_bytes * 4 // 3 + 1024)
        try:
            image = values.get("image") if isinstance(values, dict) else None
            found = read_image_parameters(_image_bytes(image, limits), field="image")
        except ValidationError as error:
            return refusal_response(error)
        text = found.text or ""
        prompt, negative, pairs = split_parameters(text) if text else ("", "", [])
        parsed = {"Prompt": prompt, "Negative prompt": negative, **dict(pairs)} if text else {}
        return {"info": text, "items": {"parameters": text} if text else {}, "parameters": parsed}

    @router.get("/controlnet/model_list")
    def controlnet_models():
        return {"model_list": list(CONTROLNET_MODELS)}

    @router.get("/controlnet/module_list")
    def controlnet_modules():
        return {"module_list": list(CONTROL_MODULES)}

    return router


def _image_bytes(value, limits) -> bytes:
    """The bytes of a base64 image (raw or data: URL), size-checked; the pixels are not decoded here."""
    if not isinstance(value, str) or not value:
        raise ValidationError("image", "must be a base64-encoded image")
    if value[:5].lower() == "data:":
        return decode_data_url(value, limits.max_upload_bytes, "image")
    if len(value) * 3 // 4 > limits.max_upload_bytes:
        raise ValidationError("image", f"is larger than {limits.max_upload_bytes // 1024 // 1024} MB")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ValidationError("image", "is not valid base64") from None


__all__ = ["a1111_router"]
