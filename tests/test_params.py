"""Validation refuses every bad field with a message naming it, before any model work."""

import pytest
from PIL import Image

from kolors_app.config import Limits
from kolors_app.params import (ImageToImageRequest, IPAdapterRequest, TextToImageRequest, ValidationError,
                               request_from_dict, validate)

LIMITS = Limits()


def t2i(**changes):
    return TextToImageRequest(**{"prompt": "a red fox", **changes})


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
        validate(TextToImageRequest(prompt="  "), LIMITS)
    image = Image.new("RGB", (64, 64))
    assert validate(ImageToImageRequest(prompt="", image=image), LIMITS).prompt == ""


@pytest.mark.parametrize("strength", [0, -0.1, 1.5, float("nan")])
def test_strength_range(strength):
    request = ImageToImageRequest(prompt="p", image=Image.new("RGB", (64, 64)), strength=strength)
    with pytest.raises(ValidationError) as error:
        validate(request, LIMITS)
    assert error.value.field == "strength"


def test_strength_too_small_for_steps():
    request = ImageToImageRequest(prompt="p", image=Image.new("RGB", (64, 64)), strength=0.1,
                                  num_inference_steps=5)
    with pytest.raises(ValidationError, match="strength"):
        validate(request, LIMITS)


def test_images_required_and_bounded():
    with pytest.raises(ValidationError) as error:
        validate(ImageToImageRequest(prompt="p"), LIMITS)
    assert error.value.field == "image"
    with pytest.raises(ValidationError) as error:
        validate(IPAdapterRequest(prompt="p"), LIMITS)
    assert error.value.field == "ip_adapter_image"
    with pytest.raises(ValidationError) as error:
        validate(IPAdapterRequest(ip_adapter_image="not an image"), LIMITS)
    assert error.value.field == "ip_adapter_image"
    small = Limits(max_image_pixels=100)
    with pytest.raises(ValidationError, match="pixels"):
        validate(IPAdapterRequest(ip_adapter_image=Image.new("RGB", (11, 10))), small)
    with pytest.raises(ValidationError) as error:
        validate(IPAdapterRequest(ip_adapter_image=Image.new("RGB", (8, 8)), ip_adapter_scale=5), LIMITS)
    assert error.value.field == "ip_adapter_scale"


def test_limits_are_configurable():
    limits = Limits(max_size=512, max_steps=10, max_images=2)
    for field, value in [("width", 520), ("num_inference_steps", 11), ("num_images", 3)]:
        with pytest.raises(ValidationError) as error:
            validate(t2i(**{"width": 512, "height": 512, "num_inference_steps": 4, field: value}), limits)
        assert error.value.field == field


def test_request_round_trips_through_dict():
    request = IPAdapterRequest(prompt="猫, \"quoted\"\nline", ip_adapter_scale=0.8, seed=7,
                               ip_adapter_image=Image.new("RGB", (8, 8)))
    values = request.to_dict()
    assert values["mode"] == "ip_adapter" and "ip_adapter_image" not in values
    again = request_from_dict({**values, "unknown": 1})
    assert isinstance(again, IPAdapterRequest)
    assert again.to_dict() == values
    with pytest.raises(ValidationError, match="mode"):
        request_from_dict({"mode": "video"})
