"""The app's own REST API (`--api`): `POST /kolors/v1/generate`, one request in, the finished PNG out.

For programs that want nothing between them and the model: no queue protocol, no event stream, no file to
fetch afterwards. The body is the flat parameters every image carries in its JSON chunk (the names of the
gradio endpoints; `mode` may be left out: the images given decide it), images as base64 under their own
names. The answer is the PNG itself (with `Accept: image/png` and one image) or JSON with the PNGs in base64.
Its jobs go to the app's one job engine (kolors_app/engine/) like every other entrance's: the same schema,
validation, budget, owner quotas and GPU slot: a bad value is HTTP 422 naming the field, with its code and what
is allowed, before any model work.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any, Callable

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from kolors_app.api.a1111.payloads import decode_image
from kolors_app.api.a1111.routes import body_limit_of, read_json
from kolors_app.api.waiting import credentials_check, error_response, outcome_of, owner_dependency, refusal_response
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import (MAX_CONTROL_UNITS, MODE_DEFAULTS, MODES, GenerationResult, InitImage, Reference,
                                     control_name)
from kolors_app.core.schema import parameter_names, request_from_dict
from kolors_app.engine.engine import QueueFull
from kolors_app.engine.jobs import GENERATE, REST, Job, Owner
from kolors_app.outputs.result_files import encode_png

log = logging.getLogger(__name__)
PATH = "/kolors/v1/generate"
CONTROL_IMAGES = tuple(control_name("image", index) for index in range(MAX_CONTROL_UNITS))


def implied_mode(body: dict) -> str:
    """The mode the images given ask for, when the body names none."""
    if "mask" in body or any(body.get(f"outpaint_{side}") for side in ("left", "right", "up", "down")):
        return "inpaint"
    if "ip_adapter_image" in body:
        return "ip_adapter"
    return "image_to_image" if "image" in body else "text_to_image"


def image_fields(mode: str) -> tuple[str, ...]:
    """The image parameters a mode takes (besides the ControlNet units' images)."""
    return {"text_to_image": (), "image_to_image": ("image",), "ip_adapter": ("ip_adapter_image", "image"),
            "inpaint": ("image", "mask", "ip_adapter_image")}[mode] + CONTROL_IMAGES


def request_of(body: Any, limits):
    """The core's request for a body, its images decoded safely (sizes checked first); not yet validated."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object of parameters", "wrong_type")
    mode = body.get("mode") or implied_mode(body)
    parameters = {**{name: value for name, value in body.items() if name not in CONTROL_IMAGES}, "mode": mode}
    if mode not in MODES:
        request_from_dict(parameters, limits)  # refused naming `mode`, as by every reader
    images = image_fields(mode)
    known = {*parameter_names(mode), *images}
    for name in body:
        if name not in known:
            raise ValidationError(name, f"is not a parameter of {mode}; the parameters are {', '.join(sorted(known))}",
                                  "unknown_field", sorted(known))
    # The schema checks every value (types, ranges); validate() then checks the images and what parts need.
    request = request_from_dict({name: value for name, value in parameters.items() if name not in images}, limits)
    if "image" in body:
        if request.init is None:  # IP-Adapter with an init image but no strength of its own
            request.init = InitImage(strength=MODE_DEFAULTS[mode]["strength"])
        request.init.image = decode_image(body["image"], "image", limits)
    if "mask" in body and request.inpaint is not None:
        request.inpaint.mask = decode_image(body["mask"], "mask", limits)
    if "ip_adapter_image" in body:
        request.reference = request.reference or Reference()  # inpainting with a reference: the default scale
        request.reference.image = decode_image(body["ip_adapter_image"], "ip_adapter_image", limits)
    typed = [index for index in range(MAX_CONTROL_UNITS)
             if body.get(control_name("type", index), "none") not in (None, "none")]
    for index, name in enumerate(CONTROL_IMAGES):
        if name in body and index not in typed:
            raise ValidationError(name, f"is given without {control_name('type', index)} (canny, depth or pose)")
    for unit, index in zip(request.controls, typed):
        name = control_name("image", index)
        unit.image = decode_image(body[name], name, limits) if name in body else None
    return request


def native_router(ctx, public_message: Callable[[Exception], str] = lambda error: (
                      f"generation failed ({type(error).__name__})"), logins=None) -> APIRouter:
    """The route, bound to the app's context; its jobs go to the app's one job engine. `logins`: the app's login
    back-off, shared with its other entrances (by default one of the router's own)."""
    settings, limits = ctx.settings, ctx.settings.limits
    check = credentials_check(settings, logins)
    router = APIRouter(dependencies=[Depends(check)])
    caller = owner_dependency(settings, check)
    body_limit = body_limit_of(limits)

    def encoded_images(result: GenerationResult) -> list[bytes]:
        encoded = [encode_png(item.image, item.parameters) for item in result.images]
        if ctx.saver is not None:  # the outputs copy, written after the answer by the saver's thread
            for item, data in zip(result.images, encoded):
                ctx.saver.save(item.parameters, data)
        return encoded

    @router.post(PATH)
    async def generate(http: Request, owner: Owner = Depends(caller)):
        body = await read_json(http, body_limit)  # broken JSON: 422; too large: 413
        try:
            handle = ctx.engine.submit(Job(GENERATE, owner, REST, [request_of(body, limits)]), follow=False)
            outcome = await outcome_of(handle, http)
            result = outcome.results[0] if outcome.results else GenerationResult([], handle.job.requests[0],
                                                                                   stopped=True)
            encoded = await anyio.to_thread.run_sync(encoded_images, result)
        except ValidationError as error:
            return refusal_response(error)
        except QueueFull as error:
            return error_response(503, "Queue is full", str(error))
        except Exception as error:  # logged in full by the executor, short for the caller
            log.error("REST API generation failed: %s", type(error).__name__)
            return error_response(500, type(error).__name__, public_message(error))
        headers = {"X-Kolors-Seeds": ",".join(str(item.seed) for item in result.images),
                   "X-Kolors-Warnings": json.dumps(result.warnings)}  # ASCII: JSON escapes the rest
        if "image/png" in http.headers.get("accept", "") and len(encoded) == 1:
            return Response(encoded[0], media_type="image/png", headers=headers)
        return JSONResponse({"images": [base64.b64encode(data).decode("ascii") for data in encoded],
                             "parameters": [item.parameters for item in result.images],
                             "warnings": result.warnings, "stopped": result.stopped}, headers=headers)

    return router


__all__ = ["native_router", "PATH"]
