"""OpenAI's images API (`--api`, /v1/) on the tiny model, through the official `openai` client and raw HTTP."""

import base64
import dataclasses
import io
import json

import httpx
import numpy as np
import openai
import pytest
import torch
from diffusers import KolorsPipeline
from gradio_http import free_port, wait_until
from PIL import Image

from kolors_app.core.logins import Login
from kolors_app.core.request import GenerationRequest
from kolors_app.engine.generation import generate
from kolors_app.metadata.png_chunks import JSON_KEY

KEY = "sk-kolors-test-0001"
OTHER_KEY = "sk-kolors-test-0002"
FAST = {"num_inference_steps": 2}


@pytest.fixture(scope="module")
def served(settings, manager, tmp_path_factory):
    """The app with --api and two --api-key keys, in this process on the shared tiny manager: (base URL, ctx)."""
    from kolors_app.launch import launch

    folder = tmp_path_factory.mktemp("openai")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        own = dataclasses.replace(settings, port=free_port(), api=True, api_key=(KEY, OTHER_KEY),
                                  outputs_dir=folder / "outputs")
        app, ctx = launch(own, manager, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{own.port}", ctx
        finally:
            app.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=f"{served[0]}/v1", api_key=KEY, max_retries=0, timeout=120)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def photo() -> Image.Image:
    """A 256 px colour gradient, opaque."""
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)),
                                     np.full((256, 256), 90, np.uint8)], axis=-1))


def square_mask(transparent=True) -> Image.Image:
    """OpenAI's mask: opaque everywhere but a transparent square (64..192), the area to repaint."""
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    if transparent:
        mask.paste((0, 0, 0, 0), (64, 64, 192, 192))
    return mask


def post(served, path: str, key: str | None = KEY, **options) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{served[0]}{path}", headers=headers, timeout=120, **options)


# --- the proof, through the official client ---


def test_the_openai_client_gets_the_same_pixels_as_the_rest_route_the_core_and_bare_diffusers(client, served, manager,
                                                                                              hf_cache):
    answer = client.images.generate(prompt="一只猫 a cat", size="256x256", n=1, extra_body={"seed": 7, **FAST})
    image = opened(base64.b64decode(answer.data[0].b64_json))
    assert image.size == (256, 256) and answer.created > 0
    stored = json.loads(image.info[JSON_KEY])
    assert stored["seed"] == 7 and stored["mode"] == "text_to_image" and stored["num_inference_steps"] == 2
    rest = httpx.post(f"{served[0]}/kolors/v1/generate", headers={"Accept": "image/png"}, timeout=120,
                      json={"prompt": "一只猫 a cat", "seed": 7, "width": 256, "height": 256, **FAST})
    assert rest.status_code == 200, rest.text
    assert np.array_equal(pixels(image), pixels(opened(rest.content)))
    core = generate(manager, GenerationRequest("一只猫 a cat", width=256, height=256, num_inference_steps=2, seed=7))
    assert np.array_equal(pixels(image), pixels(core.images[0].image))
    bare = KolorsPipeline.from_pretrained("Kwai-Kolors/Kolors-diffusers", variant="fp16", dtype=torch.float32)
    expected = bare(prompt="一只猫 a cat", negative_prompt="", width=256, height=256, num_inference_steps=2,
                    guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(7)).images[0]
    assert np.array_equal(pixels(image), pixels(expected))  # the pipeline a user writes from the diffusers docs


def test_several_images_continue_the_seed(client):
    answer = client.images.generate(prompt="two foxes", size="256x256", n=2, extra_body={"seed": 11, **FAST})
    seeds = [json.loads(opened(base64.b64decode(item.b64_json)).info[JSON_KEY])["seed"] for item in answer.data]
    assert seeds == [11, 12]


def test_an_edit_changes_only_the_transparent_area(client):
    before = photo()
    answer = client.images.edit(image=("photo.png", png(before), "image/png"), prompt="a red ball",
                                mask=("mask.png", png(square_mask()), "image/png"), size="256x256",
                                extra_body={"seed": 5, **FAST})
    after = opened(base64.b64decode(answer.data[0].b64_json))
    assert after.size == (256, 256)
    outside = np.ones((256, 256), bool)
    outside[64:192, 64:192] = False
    assert np.array_equal(pixels(after)[outside], pixels(before)[outside])  # every pixel outside, exactly
    assert np.abs(pixels(after)[64:192, 64:192] - pixels(before)[64:192, 64:192]).mean() > 10
    stored = json.loads(after.info[JSON_KEY])
    assert stored["mode"] == "inpaint" and stored["mask_blur"] == 0


def test_an_edit_without_a_mask_repaints_the_transparent_area_of_the_image(client):
    image = photo().convert("RGBA")
    image.paste((0, 0, 0, 0), (0, 0, 128, 256))  # the left half is transparent
    answer = client.images.edit(image=("photo.png", png(image), "image/png"), prompt="a tree",
                                extra_body={"seed": 6, **FAST})
    after = pixels(opened(base64.b64decode(answer.data[0].b64_json)))
    assert np.array_equal(after[:, 128:], pixels(photo())[:, 128:])
    assert not np.array_equal(after[:, :128], pixels(photo())[:, :128])


def test_a_variation_takes_the_image_as_an_ip_adapter_reference(client):
    answer = client.images.create_variation(image=("photo.png", png(photo()), "image/png"), size="256x256",
                                            extra_body={"seed": 3, **FAST})
    stored = json.loads(opened(base64.b64decode(answer.data[0].b64_json)).info[JSON_KEY])
    assert stored["mode"] == "ip_adapter" and stored["ip_adapter_scale"] == 0.5


def test_models_list_the_one_model_and_any_model_name_is_served(client):
    assert [model.id for model in client.models.list()] == ["kolors"]
    answer = client.images.generate(model="gpt-image-1", prompt="a boat", size="256x256", extra_body=FAST)
    assert len(answer.data) == 1 and answer.data[0].b64_json and answer.data[0].url is None
    # A DALL·E name without response_format gets a link, as OpenAI answers it (LibreChat's DALL·E 3 tool reads it).
    answer = client.images.generate(model="dall-e-3", prompt="a boat", size="256x256", quality="hd", style="vivid",
                                    extra_body=FAST)
    assert answer.data[0].url and answer.data[0].b64_json is None


def test_jpeg_and_webp_answers(client, served):
    for kind in ("jpeg", "webp"):
        answer = client.images.generate(prompt="a boat", size="256x256", output_format=kind, output_compression=80,
                                        extra_body=FAST)
        assert answer.output_format == kind
        assert opened(base64.b64decode(answer.data[0].b64_json)).format == kind.upper()
    linked = client.images.generate(prompt="a boat", size="256x256", output_format="webp", response_format="url",
                                    extra_body=FAST)
    assert linked.data[0].url.endswith(".webp")
    assert httpx.get(linked.data[0].url, timeout=30).headers["content-type"] == "image/webp"


def test_a_url_answer_links_to_the_apps_own_origin(client, served):
    answer = client.images.generate(prompt="a lighthouse", size="256x256", response_format="url",
                                    extra_body={"seed": 9, **FAST})
    url = answer.data[0].url
    assert url.startswith(f"{served[0]}/v1/images/files/") and answer.data[0].b64_json is None
    fetched = httpx.get(url, timeout=30)  # no key: the link's name is the key, as OpenAI's links
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert json.loads(opened(fetched.content).info[JSON_KEY])["seed"] == 9
    missing = httpx.get(f"{served[0]}/v1/images/files/nothing-here.png", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "name"


def test_links_expire_after_an_hour_and_the_store_keeps_its_cap():
    from kolors_app.api.image_links import ImageLinks

    now = [0.0]
    links = ImageLinks(max_bytes=10, clock=lambda: now[0])
    first = links.add(b"12345")
    second = links.add(b"67890")
    assert links.get(first) == b"12345" and links.get(second) == b"67890"
    third = links.add(b"abc")  # 13 bytes: the oldest goes
    assert links.get(first) is None and links.get(third) == b"abc"
    now[0] = 3600.0
    assert links.get(second) is None and links.get(third) is None


def test_unknown_and_unused_fields_are_ignored_and_named(served):
    answer = post(served, "/v1/images/generations", json={"prompt": "a cat", "size": "256x256", "quality": "hd",
                                                           "style": "vivid", "user": "u-1", "colour": "blue", **FAST})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-kolors-ignored"] == "quality, style, user, colour"
    assert json.loads(answer.headers["x-kolors-warnings"]) == []


# --- refusals: OpenAI's error shape, 400 naming the field ---


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x", "size": "1000x1001"}, "size"),
    ({"prompt": "x", "size": "4096x4096"}, "size"),
    ({"prompt": "x", "size": "big"}, "size"),
    ({"prompt": "x", "size": 1024}, "size"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "n": 99}, "n"),
    ({"prompt": "x", "response_format": "gif"}, "response_format"),
    ({"prompt": "x", "output_format": "gif"}, "output_format"),
    ({"prompt": "x", "output_format": "jpeg", "output_compression": 101}, "output_compression"),
    ({"prompt": "x", "stream": True}, "stream"),
    ({"size": "256x256"}, "prompt"),
    ({"prompt": {"text": "x"}}, "prompt"),
    ({"prompt": "x", "seed": "abc"}, "seed"),
    ({"prompt": "x", "scheduler": "LMS"}, "scheduler"),
    ({"prompt": "a fox <lora:missing:0.5>", "size": "256x256", **FAST}, "prompt"),
    ({"prompt": "x", "num_inference_steps": 10**6}, "num_inference_steps"),
    ({"prompt": "x", "size": "2048x2048", "n": 8, "num_inference_steps": 150}, "num_inference_steps"),  # budget
    ([1, 2], "body"),
])
def test_bad_values_are_a_400_naming_the_field(served, body, param):
    answer = post(served, "/v1/images/generations", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["message"].startswith(param) and error["type"] == "invalid_request_error"


def test_the_openai_client_reads_a_bad_size_as_a_bad_request_naming_it(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a cat", size="1000x1001")
    assert raised.value.status_code == 400 and raised.value.param == "size"
    assert "multiple of 8" in raised.value.message


def test_broken_nested_and_huge_bodies_are_refused_and_the_server_keeps_serving(served):
    for content in (b"{not json", b"[" * 100_000 + b"]" * 100_000):
        answer = post(served, "/v1/images/generations", content=content)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "body", answer.text[:300]
    huge = b'{"prompt": "' + b"x" * (8 * 1024 * 1024) + b'"}'
    assert post(served, "/v1/images/generations", content=huge).status_code == 413
    assert post(served, "/v1/images/generations", json={"prompt": "still here", "size": "256x256",
                                                         **FAST}).status_code == 200


@pytest.mark.parametrize("files, param", [
    ({"mask": ("m.png", png(square_mask()), "image/png")}, "image"),
    ({"image": ("p.png", png(photo()), "image/png"),
      "mask": ("m.png", png(square_mask().resize((128, 128))), "image/png")}, "mask"),
    ({"image": ("p.png", png(photo()), "image/png"), "mask": ("m.png", png(photo()), "image/png")}, "mask"),
    ({"image": ("p.png", png(photo()), "image/png"),
      "mask": ("m.png", png(square_mask(transparent=False)), "image/png")}, "mask"),
    ({"image": ("p.svg", b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "image/svg+xml")}, "image"),
    ({"image": ("p.png", b"\x89PNG\r\n\x1a\n broken", "image/png")}, "image"),
])
def test_edits_refuse_bad_images_and_masks_naming_them(served, files, param):
    answer = post(served, "/v1/images/edits", data={"prompt": "x", "size": "256x256"}, files=files)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert "/tmp" not in answer.text and "Traceback" not in answer.text


def test_an_edit_may_upload_more_than_the_json_body_limit(served):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8))
    data = png(noise)
    assert len(data) > 4 * 1024 * 1024  # more than --max-request-mb allows a JSON body
    answer = post(served, "/v1/images/edits", data={"prompt": "x", "size": "256x256", **FAST},
                  files={"image": ("noise.png", data, "image/png")})
    assert answer.status_code == 200, answer.text[:300]  # the upload limit applies, not --max-request-mb


def test_an_edit_must_be_multipart_with_the_image_as_a_file(served):
    answer = post(served, "/v1/images/edits", json={"prompt": "x", "image": "aGVsbG8="})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "body"
    answer = post(served, "/v1/images/edits", data={"prompt": "x", "image": "aGVsbG8="},
                  files={"unused": ("u.txt", b"u", "text/plain")})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "image"


# --- keys ---


def test_a_key_is_required_and_wrong_keys_back_off(served):
    assert post(served, "/v1/images/generations", key=None, json={"prompt": "x"}).status_code == 401
    assert httpx.get(f"{served[0]}/v1/models", timeout=30).status_code == 401
    statuses = [post(served, "/v1/images/generations", key="sk-wrong-key-000", json={"prompt": "x"}).status_code
                for _ in range(5)]
    assert statuses == [401] * 5  # the free attempts (--login-free-attempts)
    refused = post(served, "/v1/images/generations", key="sk-wrong-key-000", json={"prompt": "x"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    # After the wait the right key is let in again, and that ends the back-off.
    assert wait_until(lambda: httpx.get(f"{served[0]}/v1/models", headers={"Authorization": f"Bearer {KEY}"},
                                        timeout=30).status_code == 200, timeout=30)


def test_owners_are_the_keys_place_never_the_key(settings):
    from starlette.requests import Request

    from kolors_app.api.keys import ApiKeys, KeyRefused

    def request(key: str | None) -> Request:
        headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
        return Request({"type": "http", "headers": headers, "client": ("10.0.0.7", 1)})

    keys = ApiKeys(dataclasses.replace(settings, api_key=(KEY, OTHER_KEY)))
    owner = keys.owner(request(OTHER_KEY))
    assert (owner.kind, owner.id, owner.address) == ("key", "2", "10.0.0.7") and OTHER_KEY not in owner.key
    local = ApiKeys(dataclasses.replace(settings, api_key=()))
    assert local.owner(request("anything")).key == "address:10.0.0.7"  # local, no credentials: any key
    assert local.owner(request(None)).key == "address:10.0.0.7"
    for closed in (dataclasses.replace(settings, api_auth=(Login("robot", "s3cret"),)),
                   dataclasses.replace(settings, share=True)):
        with pytest.raises(KeyRefused) as refused:
            ApiKeys(closed).owner(request("anything"))
        assert refused.value.status == 401 and "--api-key" in str(refused.value)


def test_a_public_app_with_only_a_key_serves_only_the_v1_routes(settings, manager, tmp_path, monkeypatch):
    from kolors_app.launch import launch

    monkeypatch.setenv("SPACE_ID", "someone/kolors-studio")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app, ctx = launch(dataclasses.replace(settings, port=free_port(), api=True, api_key=(KEY,)), manager,
                      prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{ctx.settings.port}"
    try:
        assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()["data"]
        # The A1111 and REST routes take no key, so without --api-auth they are not served at all.
        assert httpx.get(f"{url}/sdapi/v1/options", timeout=30).status_code == 404
        assert httpx.post(f"{url}/kolors/v1/generate", json={"prompt": "x"}, timeout=30).status_code in (404, 405)
    finally:
        app.close()
