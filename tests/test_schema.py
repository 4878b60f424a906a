"""One schema for the flat parameters: every reader accepts the same values and refuses with the same field and code."""

import json
import pickle
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from kolors_app.api.rest import PATH, native_router, request_of
from kolors_app.core.config import Limits, Settings
from kolors_app.core.creative_fields import HiresFix, LoraChoice
from kolors_app.core.errors import CODES, ValidationError
from kolors_app.core.request import ControlUnit, GenerationRequest, InitImage, Inpaint, Reference
from kolors_app.core.schedulers import SCHEDULER_NAMES
from kolors_app.core.schema import clean_parameters, read_flat_parameters, request_from_dict, request_from_flat
from kolors_app.core.validation import validate
from kolors_app.engine.engine import Engine
from kolors_app.serving.quotas import engine_limits
from kolors_app.metadata.png_chunks import JSON_KEY, png_bytes, read_image_parameters
from kolors_app.outputs.history import import_json

BASE = {"prompt": "a red fox", "width": 256, "height": 256, "num_inference_steps": 8, "seed": 1}
LIMITS = Limits()


@pytest.fixture(scope="module")
def rest():
    """The REST route alone: every refusal below comes before any model work, so no model is needed."""
    settings = Settings()
    manager = SimpleNamespace(settings=settings)
    # An engine with no executor: a refusal never reaches one.
    ctx = SimpleNamespace(settings=settings, saver=None, manager=manager,
                          engine=Engine(manager, executor=None, limits=engine_limits(settings)))
    app = FastAPI()
    app.include_router(native_router(ctx))
    return TestClient(app)


def refusals(rest, values: dict) -> dict[str, tuple[str, str]]:
    """reader -> (field, code) of the refusal of these flat parameters by each reader of the app."""
    found = {}
    answer = rest.post(PATH, json=values)
    assert answer.status_code == 422, answer.text
    found["REST"] = (answer.json()["field"], answer.json()["code"])
    for reader, read in [("request_from_dict", lambda: request_from_dict(values)),
                         ("PNG JSON chunk", lambda: clean_parameters(values, JSON_KEY)),
                         ("history import", lambda: import_json(json.dumps([history_entry(values)])))]:
        with pytest.raises(ValidationError) as caught:
            read()
        found[reader] = (caught.value.field, caught.value.code)
    return found


def history_entry(parameters: dict) -> dict:
    return {"id": "e1", "time": 1_750_000_000.0, "parameters": parameters, "seeds": [1]}


def flat_name(field: str) -> str:
    """The flat parameter an error names, without the record's own prefix."""
    for prefix in (f"{JSON_KEY}.", "history[0].parameters."):
        field = field.removeprefix(prefix)
    return field


@pytest.mark.parametrize("value", ["ten", 2.5, True, None, [4]])
def test_a_wrongly_typed_hires_steps_is_refused_alike_by_every_reader(rest, value):
    found = refusals(rest, {**BASE, "hires_upscale": 1.5, "hires_steps": value})
    assert {(flat_name(field), code) for field, code in found.values()} == {("hires_steps", "wrong_type")}, found
    assert found["PNG JSON chunk"][0] == f"{JSON_KEY}.hires_steps"
    assert found["history import"][0] == "history[0].parameters.hires_steps"


@pytest.mark.parametrize("item, field, code", [
    (5, "loras.0", "wrong_type"),
    ("tiny-style", "loras.0", "wrong_type"),
    ({"weight": 0.5}, "loras.0.name", "required"),
    ({"name": "  "}, "loras.0.name", "invalid"),
    ({"name": 7}, "loras.0.name", "wrong_type"),
    ({"name": "a", "weight": "heavy"}, "loras.0.weight", "wrong_type"),
    ({"name": "a", "strength": 0.5}, "loras.0.strength", "unknown_field"),
])
def test_a_lora_that_is_not_name_and_weight_is_refused_naming_its_index(rest, item, field, code):
    found = refusals(rest, {**BASE, "loras": [item]})
    assert {(flat_name(name), kind) for name, kind in found.values()} == {(field, code)}, found
    with pytest.raises(ValidationError) as caught:  # the request object's entrance (UI, Python, A1111 routes)
        validate(GenerationRequest(**BASE, loras=[item]), LIMITS)
    assert (caught.value.field, caught.value.code) == (field, code)


@pytest.mark.parametrize("values, field", [
    ({"hires_upscale": 1.5, "hires_steps": 10**6}, "hires_steps"),
    ({"hires_upscale": 9.0}, "hires_upscale"),
    ({"width": 257}, "width"),
    ({"control_type_2": "canny", "control_scale_2": 2.5}, "control_scale_2"),
    ({"loras": [{"name": "a", "weight": 9}]}, "loras.0.weight"),
])
def test_a_request_out_of_range_is_refused_alike_by_the_entrances(rest, values, field):
    answer = rest.post(PATH, json={**BASE, **values})
    assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
    assert answer.json()["code"] == "out_of_range" and answer.json()["allowed"]["max"] is not None
    with pytest.raises(ValidationError) as caught:
        request_from_dict({**BASE, **values})
    assert (caught.value.field, caught.value.code) == (field, "out_of_range")
    # A record is read for its types: its values were right where it was made (an inpainted canvas keeps the
    # photo's size), and restore fits them to its controls.
    assert clean_parameters({**BASE, **values})


def test_the_error_carries_its_data_and_keeps_its_text():
    with pytest.raises(ValidationError) as caught:
        request_from_dict({"width": 1000 + 4})
    error = caught.value
    assert str(error) == "width: must be a multiple of 8 (e.g. 1000), got 1004"
    assert error.to_dict() == {"field": "width", "code": "out_of_range", "message": error.message,
                               "allowed": {"min": 256, "max": 2048, "whole": True, "multiple_of": 8}}
    with pytest.raises(ValidationError) as caught:
        validate(GenerationRequest("a fox", scheduler="LMS"), LIMITS)
    assert caught.value.code == "unknown_choice" and caught.value.allowed == list(SCHEDULER_NAMES)
    again = pickle.loads(pickle.dumps(caught.value))  # errors may cross processes
    assert again.to_dict() == caught.value.to_dict() and str(again) == str(caught.value)
    assert {error.code, again.code} <= set(CODES)


def test_what_a_request_writes_every_reader_accepts(rest):
    image = Image.new("RGB", (256, 256))
    request = validate(GenerationRequest(**BASE, styles=["Ink wash / 水墨"], loras=[LoraChoice("tiny-style", 0.8)],
                                         hires=HiresFix(upscale=1.5, steps=3),
                                         controls=[ControlUnit("canny", image), ControlUnit("depth", image)]), LIMITS)
    recorded = {**request.to_dict(), "model": "Kolors", "final_prompt": "a red fox, ink wash",
                "final_negative_prompt": ""}
    assert request_from_dict(recorded).to_dict() == request.to_dict()
    assert clean_parameters(recorded, JSON_KEY) == request.to_dict() | {"model": "Kolors"}
    assert import_json(json.dumps([history_entry(recorded)]))[0]["parameters"] == clean_parameters(recorded)
    assert request_of(recorded, LIMITS).to_dict() == request.to_dict()  # the REST body: an image's own JSON


def test_creative_fields_are_typed_after_every_reader():
    flat = {**BASE, "loras": [{"name": "a", "weight": 0.5, "hash": "0123456789ab"}, {"name": "b"}],
            "hires_upscale": 2, "styles": ["x"]}
    for request in [request_from_dict(flat), request_from_flat(read_flat_parameters(flat, check_ranges=False)),
                    validate(request_from_dict(flat), LIMITS)]:
        assert request.loras and all(type(choice) is LoraChoice for choice in request.loras), request.loras
        assert type(request.hires) is HiresFix and request.hires.upscale == 2.0, request.hires
        assert not any(isinstance(value, dict) for value in (*request.loras, request.hires))
    assert request_from_dict(flat).loras[0] == LoraChoice("a", 0.5, "0123456789ab")
    with pytest.raises(ValidationError) as caught:  # a dict is not a hires fix: no field may be either
        validate(GenerationRequest(**BASE, hires={"upscale": 2}), LIMITS)
    assert (caught.value.field, caught.value.code) == ("hires", "wrong_type")


def round_trip_requests() -> list[GenerationRequest]:
    image, mask = Image.new("RGB", (256, 256)), Image.new("L", (256, 256), 255)
    units = [ControlUnit("canny", image, low_threshold=10, high_threshold=50),
             ControlUnit("depth", image, preprocess=False, scale=0.4, start=0.1, end=0.8),
             ControlUnit("pose", image, scale=1.25)]
    return [
        GenerationRequest(**BASE, negative_prompt="多行\n负面", styles=["Ink wash / 水墨"],
                          loras=[LoraChoice("tiny-style", 0.8), LoraChoice("owner/repo", -1.5)],
                          hires=HiresFix(upscale=1.75, upscaler="tiny-esrgan-4x", steps=3, denoising_strength=0.4)),
        GenerationRequest(**BASE, init=InitImage(image, 0.35), controls=units[:1]),
        GenerationRequest(**BASE, init=InitImage(image, 0.5), reference=Reference(image, 0.75), controls=units[1:]),
        GenerationRequest(**BASE, init=InitImage(image, 0.999), inpaint=Inpaint(mask, 8, "masked", 64, False, "base",
                                                                                (0, 128, 0, 32)), controls=units),
        GenerationRequest(**BASE, init=InitImage(image, 0.999), inpaint=Inpaint(mask, model="base"),
                          reference=Reference(image, 0.6)),
    ]


@pytest.mark.parametrize("request_", round_trip_requests(), ids=lambda request: request.mode)
def test_a_png_json_round_trip_is_identical(request_):
    values = validate(request_, LIMITS).to_dict()
    stored = read_image_parameters(png_bytes(Image.new("RGB", (8, 8)), values))
    assert stored.source == JSON_KEY and stored.parameters == values
    again = request_from_dict(stored.parameters)
    assert again.to_dict() == values
    assert again.loras == validate(request_, LIMITS).loras and again.hires == request_.hires
