"""/inpaint and the control_* parameters: the built UI's handlers, the page's own run (painted mask), restore,
and the running app over HTTP with gradio_client."""

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageDraw
from ui_handlers import SMALL, by_id, component, final, gradient, upload

from kolors_app.metadata.infotext import format_parameters, parse_parameters
from kolors_app.metadata.png_chunks import png_bytes, read_parameters
from kolors_app.ui.app import restore_updates
from kolors_app.ui.control_units import preview_map, use_map
from kolors_app.ui.inpaint_tab import painted_mask


@pytest.fixture(scope="module")
def files(upload_dir):
    picture = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(picture).rectangle([60, 60, 200, 200], fill="black")
    mask = Image.new("L", (256, 256))
    ImageDraw.Draw(mask).rectangle([64, 64, 191, 191], fill=255)
    strokes = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    ImageDraw.Draw(strokes).ellipse([100, 100, 160, 160], fill=(255, 255, 255, 255))
    return {"image": upload(upload_dir, gradient(), "init.png"), "mask": upload(upload_dir, mask, "mask.png"),
            "picture": upload(upload_dir, picture, "picture.png"),
            "strokes": upload(upload_dir, strokes, "strokes.png")}


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def live_handler(app, api_name: str):
    return next(f.fn for f in app.fns.values() if f.api_name == api_name)


def test_inpaint_with_two_units_records_and_restores_everything(built, files):
    app, _ = built
    inpaint = app.studio_tabs["inpaint"].handler
    gallery, result = final(list(inpaint(
        "a cat", "", num_inference_steps=3, seed=4, num_images=1, image=files["image"], mask=files["mask"],
        mask_blur=0, control_type="canny", control_image=files["picture"], control_type_2="depth",
        control_image_2=files["picture"], control_scale_2=0.5, request=None, progress=None, **SMALL)))
    assert [caption for _, caption in gallery] == ["seed 4", "control map 1 (canny)", "control map 2 (depth)"]
    parameters = result["images"][0]
    assert parameters["mode"] == "inpaint" and parameters["strength"] == 0.999
    assert parameters["inpaint_model"] == "inpainting" and parameters["control_scale_2"] == 0.5
    outside = np.asarray(Image.open(files["mask"])) == 0
    assert np.array_equal(pixels(gallery[0][0])[outside], np.asarray(gradient())[outside])
    canny = pixels(gallery[1][0])
    assert set(np.unique(canny)) == {0, 255}  # an edge map of the square, not the photo

    text = format_parameters(parameters)
    assert 'ControlNet 0: "Module: canny, Model: Kolors-ControlNet-Canny, Weight: 0.7' in text
    assert 'ControlNet 1: "Module: depth, Model: Kolors-ControlNet-Depth, Weight: 0.5' in text
    assert "Mask blur: 0" in text and "Inpaint area: Whole picture" in text
    # The prompts as expanded (final_*) are not read back; the A1111 text leaves out the sides not outpainted.
    kept = {key: value for key, value in parameters.items() if not key.startswith("final_")}
    assert parse_parameters(text).parameters == {key: value for key, value in kept.items()
                                                 if not (key.startswith("outpaint_") and value == 0)}
    assert read_parameters(png_bytes(Image.new("RGB", (8, 8)), parameters)) == kept

    # PNG info's restore: the Inpaint tab, its settings and both units (their images must be given again).
    tabs_box = next(block for block in app.blocks.values() if isinstance(block, gr.Tabs))
    updates = by_id(restore_updates(app.studio_tabs, tabs_box, parameters, lang=None))
    assert updates["tabs"].selected == "inpaint"
    assert updates["inpaint-control-1-type"] == "canny" and updates["inpaint-control-2-type"] == "depth"
    assert updates["inpaint-control-2-scale"] == 0.5 and updates["inpaint-mask-blur"] == 0
    assert updates["inpaint-control-3-type"] == "none" and updates["inpaint-area"] == "whole"
    assert updates["inpaint-strength"] == 0.999 and updates["inpaint-model"] == "inpainting"


def test_control_units_on_text_to_image_and_outpainting(built, files):
    app, _ = built
    gallery, result = final(list(app.studio_tabs["text_to_image"].handler(
        "a cat", "", num_inference_steps=3, seed=4, num_images=1, control_type="canny",
        control_image=files["picture"], control_low_threshold=10, control_high_threshold=50, request=None,
        progress=None, **SMALL)))
    assert result["images"][0]["control_type"] == "canny" and gallery[1][1] == "control map 1 (canny)"
    assert result["images"][0]["control_low_threshold"] == 10
    gallery, result = final(list(app.studio_tabs["inpaint"].handler(
        "a cat", "", num_inference_steps=3, seed=4, num_images=1, image=files["image"], mask=None,
        outpaint_right=64, request=None, progress=None, **SMALL)))
    out = pixels(gallery[0][0])
    assert out.shape == (256, 320, 3) and result["images"][0]["outpaint_right"] == 64
    # The original is kept where it was (but for the 4 px mask blur at the seam).
    assert np.array_equal(out[:, :240], np.asarray(gradient())[:, :240])


def test_the_page_reads_the_mask_painted_in_the_editor(built, files):
    app, ctx = built
    editor = {"background": {"path": files["image"]}, "layers": [{"path": files["strokes"]}], "composite": None}
    mask = painted_mask(ctx, editor, (256, 256))
    assert np.asarray(mask)[130, 130] == 255 and np.asarray(mask)[10, 10] == 0
    assert painted_mask(ctx, {"background": None, "layers": [], "composite": None}, (256, 256)) is None
    page = live_handler(app, "inpaint_live")
    names = [p for p in __import__("inspect").signature(page).parameters]
    assert names[names.index("outpaint_down") + 1] == "painted"
    values = {"prompt": "a cat", "negative_prompt": "", "width": 256, "height": 256, "num_inference_steps": 3,
              "guidance_scale": 6.0, "scheduler": "Euler", "seed": 6, "num_images": 1,
              "image": {"path": files["image"]}, "mask": None, "strength": 0.999, "mask_blur": 0,
              "inpaint_area": "whole", "inpaint_padding": 32, "keep_unmasked": True, "inpaint_model": "base",
              "outpaint_left": 0, "outpaint_right": 0, "outpaint_up": 0, "outpaint_down": 0, "painted": editor}
    outputs = list(page(**values))
    gallery, summary, line = outputs[-1][:3]
    assert line.startswith("Done: 1 image(s)"), line
    out = pixels(gallery[0][0])
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], np.asarray(gradient())[outside])
    assert not np.array_equal(out[~outside], np.asarray(gradient())[~outside])
    assert summary["images"][0]["inpaint_model"] == "base"
    # Nothing painted and no mask file: a line naming the mask, no red error.
    outputs = list(page(**{**values, "painted": None}))
    assert outputs[-1][2].startswith("⚠️ mask:"), outputs[-1][2]


def test_a_units_map_is_shown_and_fed_back_as_the_image(built, files):
    _, ctx = built
    made = preview_map(ctx, 1, "canny", {"path": files["picture"]}, True, 100, 200, None)
    assert made.size == (256, 256) and set(np.unique(np.asarray(made))) == {0, 255}
    assert isinstance(preview_map(ctx, 1, "none", {"path": files["picture"]}, True, 100, 200, None),
                      type(gr.skip()))
    assert isinstance(preview_map(ctx, 2, "canny", None, True, 100, 200, None), type(gr.skip()))
    assert use_map({"path": files["picture"]}) == (files["picture"], False)


@pytest.mark.parametrize("changes, field", [
    ({"control_type": "canny", "control_image": None}, "control_image"),
    ({"control_type": "canny", "control_image": "PICTURE", "control_scale": 5}, "control_scale"),
    ({"control_type": "canny", "control_image": "PICTURE", "control_type_2": "depth", "control_image_2": "PICTURE",
      "control_end_2": 0.0}, "control_end_2"),
    ({"control_type": "canny", "control_image": "PICTURE", "control_type_2": "depth", "control_image_2": "PICTURE",
      "control_type_3": "scribble", "control_image_3": "PICTURE"}, "control_type_3"),
    ({"control_type": "canny", "control_image": "PICTURE", "control_high_threshold": 20}, "control_high_threshold"),
    ({"mask": None}, "mask"), ({"inpaint_area": "all"}, "inpaint_area"), ({"mask_blur": -3}, "mask_blur"),
    ({"inpaint_model": "sdxl"}, "inpaint_model"), ({"outpaint_left": -8}, "outpaint_left"),
])
def test_bad_values_are_refused_naming_the_parameter(built, files, changes, field):
    app, ctx = built
    values = {"image": files["image"], "mask": files["mask"],
              **{key: files["picture"] if value == "PICTURE" else value for key, value in changes.items()}}
    loads = ctx.manager.controlnets.loads
    with pytest.raises(gr.Error, match=f"^['\"]{field}:"):
        list(app.studio_tabs["inpaint"].handler("a cat", "", num_inference_steps=3, seed=4, num_images=1,
                                                request=None, progress=None, **{**SMALL, **values}))
    assert ctx.manager.controlnets.loads == loads  # refused before any model work


def test_the_inpaint_tab_has_the_upstream_defaults(built):
    app, _ = built
    assert component(app, "inpaint-strength").value == 0.999
    assert component(app, "inpaint-guidance").value == 6.0 and component(app, "inpaint-steps").value == 25
    assert component(app, "inpaint-area").value == "whole" and component(app, "inpaint-model").value == "inpainting"
    for mode in ("text_to_image", "image_to_image", "ip_adapter", "inpaint"):
        unit = {name: component(app, f"{mode}-control-1-{name}").value for name in ("type", "scale", "start", "end")}
        assert unit == {"type": "none", "scale": 0.7, "start": 0.0, "end": 0.9}


# --- Over HTTP: the launched app, as a program calls it ---


def test_the_api_inpaints_with_defaults_and_takes_control_units(client, tmp_path):
    from gradio_client import handle_file

    image, mask, picture = tmp_path / "image.png", tmp_path / "mask.png", tmp_path / "picture.png"
    gradient().save(image)
    drawn = Image.new("L", (256, 256))
    ImageDraw.Draw(drawn).rectangle([32, 32, 127, 127], fill=255)
    drawn.save(mask)
    square = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(square).rectangle([60, 60, 200, 200], fill="black")
    square.save(picture)
    # Only the common parameters, image and mask: everything else takes its default.
    gallery, result = client.predict("a cat", "", 256, 256, 2, 6.0, "Euler", 3, 1, image=handle_file(image),
                                     mask=handle_file(mask), api_name="/inpaint")
    parameters = result["images"][0]
    assert parameters["mode"] == "inpaint" and parameters["strength"] == 0.999 and parameters["mask_blur"] == 4
    assert parameters["inpaint_area"] == "whole" and parameters["keep_unmasked"] is True
    assert "control_type" not in parameters and len(gallery) == 1
    out = pixels(gallery[0]["image"])
    outside = np.ones((256, 256), bool)
    outside[12:148, 12:148] = False  # the mask and its blur (a Gaussian of radius 4 reaches about 12 px)
    assert np.array_equal(out[outside], np.asarray(gradient())[outside])
    gallery, result = client.predict("a cat", "", 256, 256, 2, 5.0, "Euler", 3, 1, control_type="canny",
                                     control_image=handle_file(picture), control_scale=0.5,
                                     api_name="/text_to_image")
    assert result["images"][0]["control_scale"] == 0.5 and gallery[1]["caption"] == "control map 1 (canny)"
    with pytest.raises(Exception, match="control_end: must be above control_start"):
        client.predict("a cat", "", 256, 256, 2, 5.0, "Euler", 3, 1, control_type="canny",
                       control_image=handle_file(picture), control_start=0.5, control_end=0.2,
                       api_name="/text_to_image")
    with pytest.raises(Exception, match="mask: an image is required"):
        client.predict("a cat", "", 256, 256, 2, 6.0, "Euler", 3, 1, image=handle_file(image), api_name="/inpaint")


def test_the_readmes_control_examples_run_as_written(live_app):
    from test_readme_api import code_blocks, run_example

    block = next(code for code in code_blocks("python") if "/inpaint" in code)
    # As written but for the steps: the default 25/50 steps of three runs take minutes on a shared CPU.
    found = run_example(block.replace("api_name=", "num_inference_steps=2, api_name="), live_app, None)
    assert found["info"]["images"][0]["control_type_2"] == "depth"
    assert [item["caption"] for item in found["images"]] == ["seed " + str(found["info"]["images"][0]["seed"]),
                                                              "control map 1 (canny)", "control map 2 (depth)"]
    assert Image.open(found["statue"]["image"]).size == (768, 512)
