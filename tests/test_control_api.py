"""The /inpaint endpoint and the control_* parameters through the built UI's handlers; metadata and restore."""

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageDraw

from kolors_app.metadata import format_parameters, parse_parameters, png_bytes, read_parameters

from ui_handlers import SMALL, by_id, final, gradient, handler, upload


@pytest.fixture(scope="module")
def files(upload_dir):
    picture = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(picture).rectangle([60, 60, 200, 200], fill="black")
    mask = Image.new("L", (256, 256))
    ImageDraw.Draw(mask).rectangle([64, 64, 191, 191], fill=255)
    return {"image": upload(upload_dir, gradient(), "init.png"), "mask": upload(upload_dir, mask, "mask.png"),
            "picture": upload(upload_dir, picture, "picture.png")}


def test_inpaint_endpoint_with_two_units_records_and_restores_everything(built, files):
    app, _ = built
    inpaint = handler(app, "inpaint-generate", "click")
    gallery, result = final(list(inpaint(
        "a cat", "", num_inference_steps=3, seed=4, num_images=1, image=files["image"], mask=files["mask"],
        mask_blur=0, control_type="canny", control_image=files["picture"], control_type_2="depth",
        control_image_2=files["picture"], control_scale_2=0.5, request=None, progress=None, **SMALL)))
    assert [caption for _, caption in gallery] == ["seed 4", "control map 1 (canny)", "control map 2 (depth)"]
    parameters = result["images"][0]
    assert parameters["mode"] == "inpaint" and parameters["strength"] == 0.999
    assert parameters["inpaint_model"] == "inpainting" and parameters["control_scale_2"] == 0.5
    outside = np.asarray(Image.open(files["mask"])) == 0
    assert np.array_equal(np.asarray(gallery[0][0].convert("RGB"))[outside],
                          np.asarray(gradient())[outside])

    text = format_parameters(parameters)
    assert 'ControlNet 0: "Module: canny, Model: Kolors-ControlNet-Canny, Weight: 0.7' in text
    assert 'ControlNet 1: "Module: depth, Model: Kolors-ControlNet-Depth, Weight: 0.5' in text
    assert "Mask blur: 0" in text and "Inpaint area: Whole picture" in text
    # The A1111 text leaves out the sides not outpainted.
    assert parse_parameters(text).parameters == {key: value for key, value in parameters.items()
                                                 if not (key.startswith("outpaint_") and value == 0)}
    assert read_parameters(png_bytes(Image.new("RGB", (8, 8)), parameters)) == parameters

    restore = handler(app, "inpaint-use-settings", "click")
    updates = by_id(restore(parameters))
    assert updates["tabs"].selected == "inpaint"
    assert updates["inpaint-control-1-type"] == "canny" and updates["inpaint-control-2-type"] == "depth"
    assert updates["inpaint-control-2-scale"] == 0.5 and updates["inpaint-mask-blur"] == 0


def test_control_units_on_text_to_image_and_outpainting(built, files):
    app, _ = built
    text_to_image = handler(app, "text_to_image-generate", "click")
    gallery, result = final(list(text_to_image("a cat", "", num_inference_steps=3, seed=4, num_images=1,
                                               control_type="pose", control_image=files["picture"], request=None,
                                               progress=None, **SMALL)))
    assert result["images"][0]["control_type"] == "pose" and gallery[1][1] == "control map 1 (pose)"
    inpaint = handler(app, "inpaint-generate", "click")
    gallery, result = final(list(inpaint("a cat", "", num_inference_steps=3, seed=4, num_images=1,
                                         image=files["image"], mask=None, outpaint_right=64, request=None,
                                         progress=None, **SMALL)))
    assert gallery[0][0].size == (320, 256) and result["images"][0]["outpaint_right"] == 64


@pytest.mark.parametrize("changes, field", [
    ({"control_type": "canny", "control_image": None}, "control_image"),
    ({"control_type": "canny", "control_image": "PICTURE", "control_scale": 5}, "control_scale"),
    ({"control_type": "canny", "control_image": "PICTURE", "control_type_2": "depth", "control_image_2": "PICTURE",
      "control_end_2": 0.0}, "control_end_2"),
    ({"control_type": "canny", "control_image": "PICTURE", "control_type_2": "depth", "control_image_2": "PICTURE",
      "control_type_3": "scribble", "control_image_3": "PICTURE"}, "control_type_3"),
    ({"mask": None}, "mask"), ({"inpaint_area": "all"}, "inpaint_area"), ({"mask_blur": -3}, "mask_blur"),
])
def test_bad_values_are_refused_naming_the_parameter(built, files, changes, field):
    app, _ = built
    inpaint = handler(app, "inpaint-generate", "click")
    values = {"image": files["image"], "mask": files["mask"],
              **{key: files["picture"] if value == "PICTURE" else value for key, value in changes.items()}}
    with pytest.raises(gr.Error, match=f"{field}:"):
        list(inpaint("a cat", "", num_inference_steps=3, seed=4, num_images=1, request=None, progress=None,
                     **{**SMALL, **values}))


def test_a1111_controlnet_text_of_another_model_is_read_by_its_module():
    text = ("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, "
            'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, '
            'Guidance Start: 0.0, Guidance End: 1.0"')
    parsed = parse_parameters(text)
    assert parsed.parameters["control_type"] == "canny" and parsed.parameters["control_scale"] == 1.0
    assert parse_parameters(text.replace("Module: canny", "Module: scribble")).warnings == [
        "ControlNet 0 (control_v11p_sd15_canny [d14c016b]) is not a Kolors ControlNet; left out"]
