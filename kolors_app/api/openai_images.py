"""OpenAI's images API (`--api`): POST /v1/images/generations, /edits and /variations, GET /v1/models, for the
tools that speak it (LibreChat, LobeChat, Open WebUI's OpenAI engine, any program using the `openai` client).

Each call is one job of the app's job engine, like every other entrance's: the same schema, budget, owner quotas
and GPU slot. Refusals use OpenAI's error shape (`{"error": {"message", "type", "param", "code"}}`), 400 naming
the field. A Bearer key from --api-key is checked first (kolors_app/api/keys.py); images are answered as base64
(the default: nothing is kept) or as links on the app's own origin that live one hour (kolors_app/api/image_links.py).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
from typing import Awaitable, Callable

import anyio
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from kolors_app.api.a1111.routes import read_json
from kolors_app.api.image_links import PATH as FILES_PATH
from kolors_app.api.image_links import ImageLinks, origin_of
from kolors_app.api.keys import ApiKeys, KeyRefused
from kolors_app.api.openai_requests import (OUTPUT_FORMATS, OpenAICall, edit_call, generation_call, openai_name,
                                            variation_call)
from kolors_app.api.waiting import outcome_of
from kolors_app.core.config import Limits
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import GeneratedImage
from kolors_app.engine.engine import QueueFull
from kolors_app.engine.jobs import GENERATE, OPENAI, Job, JobOutcome
from kolors_app.outputs.result_files import encode_png
from kolors_app.serving.quotas import resolve

log = logging.getLogger(__name__)
MODEL_ID = "kolors"
JSON_BODY_LIMIT = 1024 * 1024  # a generation's body has no image
MAX_FORM_FIELDS = 64
MAX_LISTED = 32  # ignored fields named in the response header
HEADER_NAME = re.compile(r"[A-Za-z0-9_.\[\]-]{1,64}")


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None) -> JSONResponse:
    """OpenAI's error shape."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def listed(names: list[str]) -> str:
    """Field names for a header: plain ASCII names only (others as `?`), at most MAX_LISTED."""
    shown = [name if HEADER_NAME.fullmatch(name) else "?" for name in names[:MAX_LISTED]]
    return ", ".join(shown + (["..."] if len(names) > MAX_LISTED else []))


def encoded(item: GeneratedImage, call: OpenAICall) -> bytes:
    """One image in the format asked for: a PNG with its parameters, or a JPEG or WebP at the asked quality."""
    if call.output_format == "png":
        return encode_png(item.image, item.parameters)
    buffer = io.BytesIO()
    item.image.save(buffer, call.output_format.upper(), quality=call.compression)
    return buffer.getvalue()


async def read_upload(upload: UploadFile, name: str, limits: Limits) -> bytes:
    """An uploaded file's bytes, refused past the upload limit before more is read."""
    data = await upload.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise ValidationError(name, f"is larger than {limits.max_upload_bytes / 1024 / 1024:.0f} MB", "too_large",
                              {"max_bytes": limits.max_upload_bytes})
    return data


def split_form(form) -> tuple[dict[str, str], dict[str, list[UploadFile]]]:
    """A multipart form's text fields and its files (by field name)."""
    fields, files = {}, {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.setdefault(name, []).append(value)
        else:
            fields[name] = value
    return fields, files


def one_file(files: dict[str, list[UploadFile]], fields: dict, names: tuple[str, ...], notes: list[str],
             required: bool) -> UploadFile | None:
    """The file given under one of `names` (`image`, or `image[]` for several: the first is used)."""
    given = [upload for name in names for upload in files.get(name, [])]
    if not given:
        if names[0] in fields:
            raise ValidationError(names[0], "must be an uploaded file (multipart/form-data), not text", "wrong_type")
        if required:
            raise ValidationError(names[0], "is required: upload the image file", "required")
        return None
    if len(given) > 1:
        notes.append(f"{names[0]}: {len(given)} files were given; the first was used")
    return given[0]


def openai_router(ctx, public_message: Callable[[Exception], str] = lambda error: (
                      f"generation failed ({type(error).__name__})")) -> APIRouter:
    """The routes, bound to the app's context; their jobs go to the app's one job engine."""
    limits = ctx.settings.limits
    keys = ApiKeys(ctx.settings)
    links = ImageLinks()
    trust_forwarded = resolve(ctx.settings).trust_forwarded
    router = APIRouter()

    def read_form(http: Request):
        """The multipart form, to open with `async with` (its spooled files are closed at the end)."""
        if not http.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise ValidationError("body", "must be multipart/form-data: the image (and mask) as files", "wrong_type")
        return http.form(max_files=8, max_fields=MAX_FORM_FIELDS)

    async def read_generation(http: Request) -> OpenAICall:
        return generation_call(await read_json(http, JSON_BODY_LIMIT), limits)

    async def read_edit(http: Request) -> OpenAICall:
        async with read_form(http) as form:
            fields, files = split_form(form)
            notes: list[str] = []
            image = await read_upload(one_file(files, fields, ("image", "image[]"), notes, True), "image", limits)
            mask = one_file(files, fields, ("mask",), notes, False)
            mask_data = await read_upload(mask, "mask", limits) if mask is not None else None
        call = await anyio.to_thread.run_sync(edit_call, fields, image, mask_data, limits)
        call.notes[:0] = notes
        return call

    async def read_variation(http: Request) -> OpenAICall:
        async with read_form(http) as form:
            fields, files = split_form(form)
            notes: list[str] = []
            image = await read_upload(one_file(files, fields, ("image",), notes, True), "image", limits)
        call = await anyio.to_thread.run_sync(variation_call, fields, image, limits)
        call.notes[:0] = notes
        return call

    def answer(http: Request, call: OpenAICall, outcome: JobOutcome) -> JSONResponse:
        images = outcome.images
        files = [encoded(item, call) for item in images]
        if call.response_format == "url":
            origin = origin_of(http, trust_forwarded)
            data = [{"url": f"{origin}{FILES_PATH}/{links.add(file, call.output_format)}"} for file in files]
        else:
            data = [{"b64_json": base64.b64encode(file).decode("ascii")} for file in files]
        headers = {"X-Kolors-Seeds": ",".join(str(item.seed) for item in images),
                   "X-Kolors-Warnings": json.dumps(call.notes + outcome.warnings),  # ASCII: JSON escapes the rest
                   "X-Kolors-Ignored": listed(call.ignored)}
        return JSONResponse({"created": int(time.time()), "data": data, "output_format": call.output_format},
                            headers=headers)

    async def run(http: Request, read: Callable[[Request], Awaitable[OpenAICall]]):
        """Check the key, read the call, run it as one job and answer; every refusal in OpenAI's error shape."""
        try:
            owner = keys.owner(http)  # before the body is read: no work for a caller without a key
        except KeyRefused as refused:
            headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else None
            return openai_error(refused.status, str(refused), code=refused.code, headers=headers)
        try:
            call = await read(http)
            handle = ctx.engine.submit(Job(GENERATE, owner, OPENAI, [call.request]), follow=False)
            outcome = await outcome_of(handle, http)
            return await anyio.to_thread.run_sync(answer, http, call, outcome)
        except ValidationError as error:
            name = openai_name(error.field)
            return openai_error(400, f"{name}: {error.message}", name, error.code)
        except HTTPException as error:  # a broken or deeply nested body (422 in A1111's routes), or too large
            status = 413 if error.status_code == 413 else 400
            return openai_error(status, str(error.detail), "body", "invalid_body")
        except QueueFull as error:
            return openai_error(503, str(error), code="queue_full", kind="server_error")
        except Exception as error:  # logged in full by the executor, short for the caller
            log.error("OpenAI images API call failed: %s", type(error).__name__)
            return openai_error(500, public_message(error), kind="server_error")

    @router.post("/v1/images/generations")
    async def generations(http: Request):
        return await run(http, read_generation)

    @router.post("/v1/images/edits")
    async def edits(http: Request):
        return await run(http, read_edit)

    @router.post("/v1/images/variations")
    async def variations(http: Request):
        return await run(http, read_variation)

    @router.get("/v1/models")
    def models(http: Request):
        try:
            keys.owner(http)
        except KeyRefused as refused:
            headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else None
            return openai_error(refused.status, str(refused), code=refused.code, headers=headers)
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0,
                                            "owned_by": "kolors-studio"}]}

    @router.get(FILES_PATH + "/{name}")
    def image_file(name: str):
        """A `url` answer's image; the unguessable name is the key (no API key, as OpenAI's own links)."""
        data = links.get(name)
        if data is None:
            return openai_error(404, "This image link expired (links live one hour) or never existed.", "name",
                                "not_found")
        media_type = OUTPUT_FORMATS[name.rsplit(".", 1)[-1]]
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    return router


__all__ = ["openai_router", "openai_error", "MODEL_ID"]
