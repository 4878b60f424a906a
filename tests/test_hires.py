"""Upscalers (Lanczos, latent, a tiny spandrel ESRGAN, tiled) and the hires fix as A1111 runs it."""

import numpy as np
import pytest
import torch
from PIL import Image

from kolors_app.core.config import Limits
from kolors_app.core.creative_fields import HiresFix, hires_target_size
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import GenerationRequest
from kolors_app.core.validation import validate
from kolors_app.creative import hires
from kolors_app.creative import upscalers
from kolors_app.metadata.creative_infotext import hires_from_infotext, hires_infotext
from kolors_app.testing import tiny_creative
from kolors_app.testing.tiny_presets import KOLORS_REPO


def _spandrel_imports() -> bool:
    try:
        import spandrel  # noqa: F401
    except ImportError:  # spandrel needs torchvision, which CI installs with torch 2.14
        return False
    return True


needs_spandrel = pytest.mark.skipif(not _spandrel_imports(), reason="spandrel (torchvision) does not import here")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("upscalers")
    tiny_creative.build_esrgan(folder / "tiny-esrgan-4x.safetensors")
    tiny_creative.build_esrgan(folder / "tiny-esrgan-2x.safetensors", scale=2)
    (folder / "broken.pth").write_bytes(b"not a model")
    return upscalers.UpscalerLibrary(folder)


def test_folder_models_are_listed_after_the_built_ins(library):
    assert library.names() == ["Latent", "Lanczos", "broken", "tiny-esrgan-2x", "tiny-esrgan-4x"]
    assert "Latent" not in library.names(latent=False)


@needs_spandrel
def test_lanczos_and_a_spandrel_model_upscale_to_the_exact_size(library, init_image):
    small = init_image.resize((100, 60))
    assert library.upscale(small, "Lanczos", 2).size == (200, 120)
    model = library.model("tiny-esrgan-4x")
    assert model.scale == 4
    assert library.upscale(small, "tiny-esrgan-4x", 2.5).size == (250, 150)
    assert library.upscale(small, "tiny-esrgan-2x", 4).size == (400, 240)  # the 2x model runs twice


@needs_spandrel
def test_tiles_give_the_whole_image_result(library):
    """Tiling bounds memory; with the overlap blended, tiles match one whole-image pass closely."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))
    model = library.model("tiny-esrgan-4x")
    whole = np.asarray(upscalers.run_tiled(model, image, tile=128), dtype=np.int16)
    tiled = np.asarray(upscalers.run_tiled(model, image, tile=40, overlap=8), dtype=np.int16)
    assert whole.shape == tiled.shape == (280, 360, 3)
    assert np.abs(whole - tiled).mean() < 2.0


@needs_spandrel
def test_bad_upscaler_inputs_name_the_field(library, init_image):
    with pytest.raises(ValidationError, match="upscaler: unknown upscaler 'nope'"):
        library.upscale(init_image, "nope", 2)
    with pytest.raises(ValidationError, match="upscale_factor: must be a number from 1 to 4"):
        library.upscale(init_image, "Lanczos", 9)
    with pytest.raises(ValidationError, match="upscaler: 'broken' is not a model spandrel can load"):
        library.upscale(init_image, "broken", 2)


def test_hires_settings_are_checked_against_the_limits(library):
    limits = Limits(max_size=1024)

    def checked(**settings):
        request = GenerationRequest("a fox", width=512, height=512, num_inference_steps=20, hires=HiresFix(**settings))
        return validate(request, limits).hires

    assert checked(upscale=1.5) == HiresFix(upscale=1.5)
    assert isinstance(checked(upscale=2).upscale, float)
    with pytest.raises(ValidationError, match="hires_upscale: 2.5x of 512x512 is 1280x1280, above the 1024 px"):
        checked(upscale=2.5)
    with pytest.raises(ValidationError, match="hires_upscaler: unknown upscaler"):
        library.check(checked(upscaler="nope").upscaler, "hires_upscaler")
    with pytest.raises(ValidationError, match="hires_denoising_strength"):
        checked(denoising_strength=0)
    assert hires_target_size(256, 384, 1.25, limits) == (320, 480)


def test_infotext_round_trip_with_a1111_latent_spelling():
    fix = HiresFix(upscale=2.0, upscaler="tiny-esrgan-4x", steps=10, denoising_strength=0.4)
    labels = {key: str(value) for key, value in hires_infotext(fix).items()}
    assert labels == {"Hires upscale": "2.0", "Hires steps": "10", "Hires upscaler": "tiny-esrgan-4x",
                      "Denoising strength": "0.4"}
    assert hires_from_infotext(labels) == fix.to_dict()
    assert hires_from_infotext({"Hires upscale": "1.5", "Hires upscaler": "Latent (bicubic antialiased)"})["upscaler"] \
        == "Latent"
    assert hires_from_infotext({"Steps": "20"}) is None


@pytest.mark.parametrize("upscaler", ["Latent", pytest.param("tiny-esrgan-4x", marks=needs_spandrel)])
def test_hires_fix_equals_the_two_diffusers_passes(tiny_dir, library, upscaler):
    from diffusers import KolorsImg2ImgPipeline, KolorsPipeline

    pipe = KolorsPipeline.from_pretrained(tiny_dir / KOLORS_REPO)
    img2img = KolorsImg2ImgPipeline.from_pipe(pipe)
    fix = HiresFix(upscale=1.5, upscaler=upscaler, steps=4, denoising_strength=0.5)
    base = dict(prompt="a red fox", num_inference_steps=3, width=256, height=256)
    first = pipe(**base, generator=[torch.Generator().manual_seed(7)], output_type=hires.first_pass_output_type(fix))
    size = hires_target_size(256, 256, fix.upscale, Limits())
    out = hires.second_pass(img2img, first, fix, size, base, 3, [7], library).images[0]
    assert out.size == (384, 384)
    # The same by hand: first pass, upscale, image-to-image with the same seed.
    first = pipe(**base, generator=torch.Generator().manual_seed(7), output_type=hires.first_pass_output_type(fix))
    if upscaler == "Latent":
        start = torch.nn.functional.interpolate(first.images, size=(48, 48), mode="bilinear")
    else:
        start = [library.upscale(first.images[0], upscaler, 1.5)]
    expected = img2img(prompt="a red fox", image=start, strength=0.5, num_inference_steps=4, width=384, height=384,
                       generator=torch.Generator().manual_seed(7)).images[0]
    assert np.array_equal(np.asarray(out), np.asarray(expected))
