"""Validation refuses every bad field with a message naming it, before any model work."""

import pytest
from PIL import Image

from kolors_app.core.config import Limits
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import ControlUnit, GenerationRequest, InitImage, Inpaint, Reference
from kolors_app.core.schema import request_from_dict
from kolors_app.core.validation import validate

LIMITS = Limits()


def t2i(**changes):
    return GenerationRequest(**{"prompt": "a red fox", **changes})


@pytest.mark.parametrize("field, value", [
    ("width", 1000 + 1), ("width", 0), ("width", -8), ("width", 100000), ("height", 1020), ("height", 248),
    ("width", "1024"), ("width", 1024.5), ("width", True),
    ("num_inference_steps", 0), ("num_inference_steps", -1), ("num_inference_steps", 30.5),
    ("num_inference_steps", 10**9), ("num_inference_steps", "ten"),
    ("guidance_scale", -0.1), ("guidance_scale", 30.01), ("guidance_scale", float("nan")),
    ("guidance_scale", float("inf")),
    ("seed", -2), ("seed", 2**64), ("seed", "lucky"), ("seed", 1.5),
    ("num_images", 0), ("num_images", 1000),
    ("prompt", "x" * 200_000), ("negative_prompt", "x" * 200_000), ("prompt", 42),
    ("scheduler", "Heun++ turbo"),
])
def test_bad_field_is_named(field, value):
    with pytest.raises(ValidationError) as error:
        validate(t2i(**{field: value}), LIMITS)
    assert error.value.field == field
    assert str(error.value).startswith(field + ":")


def test_good_request_is_normalised():
    request = validate(t2i(width=768.0, seed="-1", num_images=2.0), LIMITS)
    assert (request.width, request.seed, request.num_images) == (768, None, 2)
    assert isinstance(request.width, int)
    assert validate(t2i(seed="  42 "), LIMITS).seed == 42
    assert validate(t2i(seed=2**32 - 1), LIMITS).seed == 2**32 - 1


def test_empty_prompt_refused_for_text_to_image_only():
    with pytest.raises(ValidationError, match="prompt"):
        validate(GenerationRequest(prompt="  "), LIMITS)
    image = Image.new("RGB", (64, 64))
    assert validate(GenerationRequest(prompt="", init=InitImage(image)), LIMITS).prompt == ""


@pytest.mark.parametrize("strength", [0, -0.1, 1.5, float("nan")])
def test_strength_range(strength):
    request = GenerationRequest(prompt="p", init=InitImage(Image.new("RGB", (64, 64)), strength))
    with pytest.raises(ValidationError) as error:
        validate(request, LIMITS)
    assert error.value.field == "strength"


def test_strength_too_small_for_steps():
    request = GenerationRequest(prompt="p", init=InitImage(Image.new("RGB", (64, 64)), 0.1),
                               num_inference_steps=5)
    with pytest.raises(ValidationError, match="strength"):
        validate(request, LIMITS)


def test_images_required_and_bounded():
    with pytest.raises(ValidationError) as error:
        validate(GenerationRequest(prompt="p", init=InitImage()), LIMITS)
    assert error.value.field == "image"
    with pytest.raises(ValidationError) as error:
        validate(GenerationRequest(prompt="p", reference=Reference()), LIMITS)
    assert error.value.field == "ip_adapter_image"
    with pytest.raises(ValidationError) as error:
        validate(GenerationRequest(reference=Reference("not an image")), LIMITS)
    assert error.value.field == "ip_adapter_image"
    small = Limits(max_image_pixels=100)
    with pytest.raises(ValidationError, match="pixels"):
        validate(GenerationRequest(reference=Reference(Image.new("RGB", (11, 10)))), small)
    with pytest.raises(ValidationError) as error:
        validate(GenerationRequest(reference=Reference(Image.new("RGB", (8, 8)), 5)), LIMITS)
    assert error.value.field == "ip_adapter_scale"


def test_limits_are_configurable():
    limits = Limits(max_size=512, max_steps=10, max_images=2)
    for field, value in [("width", 520), ("num_inference_steps", 11), ("num_images", 3)]:
        with pytest.raises(ValidationError) as error:
            validate(t2i(**{"width": 512, "height": 512, "num_inference_steps": 4, field: value}), limits)
        assert error.value.field == field


def test_request_round_trips_through_dict():
    request = GenerationRequest(prompt="猫, \"quoted\"\nline", seed=7,
                                reference=Reference(Image.new("RGB", (8, 8)), 0.8))
    values = request.to_dict()
    assert values["mode"] == "ip_adapter" and "ip_adapter_image" not in values
    again = request_from_dict({**values, "unknown": 1})
    assert again.mode == "ip_adapter" and again.reference.image is None
    assert again.to_dict() == values
    with pytest.raises(ValidationError, match="mode"):
        request_from_dict({"mode": "video"})


def unit(**changes):
    return ControlUnit(**{"type": "canny", "image": Image.new("RGB", (64, 64)), **changes})


def test_mode_follows_the_parts():
    image = Image.new("RGB", (64, 64))
    assert t2i().mode == "text_to_image"
    assert t2i(init=InitImage(image)).mode == "image_to_image"
    assert t2i(reference=Reference(image), init=InitImage(image)).mode == "ip_adapter"
    assert t2i(init=InitImage(image), inpaint=Inpaint(image), reference=Reference(image)).mode == "inpaint"
    assert t2i(controls=[unit()]).mode == "text_to_image"


@pytest.mark.parametrize("index, changes, field", [
    (0, {"type": "scribble"}, "control_type"), (0, {"image": None}, "control_image"),
    (1, {"scale": 2.5}, "control_scale_2"), (2, {"start": -0.1}, "control_start_3"),
    (0, {"start": 0.5, "end": 0.5}, "control_end"), (1, {"preprocess": "yes"}, "control_preprocess_2"),
    (0, {"low_threshold": 300}, "control_low_threshold"), (0, {"low_threshold": 150, "high_threshold": 100},
                                                            "control_high_threshold"),
])
def test_bad_control_unit_field_is_named(index, changes, field):
    units = [unit() for _ in range(index)] + [unit(**changes)]
    with pytest.raises(ValidationError) as error:
        validate(t2i(controls=units), LIMITS)
    assert error.value.field == field


def test_at_most_three_control_units():
    with pytest.raises(ValidationError, match="at most 3") as error:
        validate(t2i(controls=[unit()] * 4), LIMITS)
    assert error.value.field == "controls"


@pytest.mark.parametrize("changes, field", [
    ({"mask": None}, "mask"), ({"mask": Image.new("L", (32, 64))}, "mask"), ({"mask_blur": -1}, "mask_blur"),
    ({"area": "some"}, "inpaint_area"), ({"model": "sd15"}, "inpaint_model"), ({"keep_unmasked": 1}, "keep_unmasked"),
    ({"outpaint": (0, -8, 0, 0)}, "outpaint_right"), ({"outpaint": (0, 0, 9000, 0)}, "outpaint_up"),
])
def test_bad_inpaint_field_is_named(changes, field):
    image = Image.new("RGB", (64, 64))
    request = t2i(init=InitImage(image, 0.999), inpaint=Inpaint(**{"mask": Image.new("L", (64, 64)), **changes}))
    with pytest.raises(ValidationError) as error:
        validate(request, LIMITS)
    assert error.value.field == field
    with pytest.raises(ValidationError, match="image: an image is required") as error:
        validate(t2i(inpaint=Inpaint(Image.new("L", (64, 64)))), LIMITS)


def test_outpainting_needs_no_mask():
    request = t2i(init=InitImage(Image.new("RGB", (64, 64)), 0.999), inpaint=Inpaint(outpaint=(64, 0, 0, 32)))
    assert validate(request, LIMITS).inpaint.outpaint == (64, 0, 0, 32)


def test_every_part_round_trips_through_flat_parameters():
    image = Image.new("RGB", (64, 64))
    request = t2i(init=InitImage(image, 0.999), inpaint=Inpaint(image, mask_blur=8, area="masked", model="base",
                                                                outpaint=(0, 128, 0, 0)),
                  controls=[unit(), unit(type="depth", preprocess=False, scale=0.4, start=0.1, end=0.8)])
    values = request.to_dict()
    assert values["mode"] == "inpaint" and values["inpaint_area"] == "masked" and values["outpaint_right"] == 128
    assert values["control_type"] == "canny" and values["control_type_2"] == "depth"
    assert values["control_scale_2"] == 0.4 and "control_type_3" not in values
    again = request_from_dict(values)
    assert again.to_dict() == values
    assert again.init.image is None and again.inpaint.mask is None and again.controls[1].image is None
    assert request_from_dict({"mode": "inpaint"}).to_dict()["strength"] == 0.999
