"""X/Y/Z plot: A1111's range syntax, cells, one text-encoder run per distinct prompt, Stop, the labelled grid."""

import threading

import numpy as np
import pytest
from PIL import Image

from kolors_app.creative import xyz
from kolors_app.engine.generation import generate
from kolors_app.core.errors import ValidationError
from kolors_app.core.schema import request_from_dict


@pytest.mark.parametrize("kind, text, values", [
    ("steps", "1-5", [1, 2, 3, 4, 5]),
    ("steps", "1-5 (+2)", [1, 3, 5]),
    ("steps", "10-1 (-3)", [10, 7, 4, 1]),
    ("guidance", "5,6.5,8", [5.0, 6.5, 8.0]),
    ("guidance", "1-10 [5]", [1.0, 3.25, 5.5, 7.75, 10.0]),
    ("seed", "1-3, 10", [1, 2, 3, 10]),
    ("prompt_sr", 'red, "blue, light", 红色', ["red", "blue, light", "红色"]),
])
def test_a1111_ranges(kind, text, values):
    assert xyz.parse_values(kind, text) == values


def test_bad_axes_name_the_field():
    with pytest.raises(ValidationError, match="x_values: 'abc' is not a number"):
        xyz.parse_values("steps", "abc")
    with pytest.raises(ValidationError, match="y_values: unknown sampler 'Nope'"):
        xyz.parse_values("sampler", "Nope", "y")
    with pytest.raises(ValidationError, match="x_type: must be one of"):
        xyz.parse_values("colour", "1")
    with pytest.raises(ValidationError, match="x_values: at most 32 values"):
        xyz.parse_values("seed", "1-100")
    with pytest.raises(ValidationError, match="seed: an X/Y/Z plot needs a fixed seed"):
        xyz.plan_cells({"seed": None}, [xyz.Axis("steps", [1, 2])])


def test_a_grid_image_is_bounded_and_so_is_the_number_of_cells():
    base = {"seed": 1, "width": 1536, "height": 1536}
    with pytest.raises(ValidationError, match="x_values: 20x8x1 = 160 cells make a grid of 360 megapixels"):
        xyz.plan_cells(base, [xyz.Axis("seed", list(range(20))), xyz.Axis("steps", list(range(1, 9)))])
    # 32x32x32 cells are refused before any of them is planned (the engine's budget would refuse them anyway).
    with pytest.raises(ValidationError, match="x_values: 32x32x32 = 32768 cells; at most 4096") as caught:
        xyz.plan_cells(dict(base, width=64, height=64), [xyz.Axis("seed", list(range(32)))] * 3)
    assert caught.value.code == "too_many"


def test_cells_apply_every_axis_kind():
    base = {"prompt": "a red fox", "negative_prompt": "", "seed": 5, "loras": [{"name": "a", "weight": 1.0}],
            "hires_upscale": 1.5, "hires_denoising_strength": 0.4}
    axes = [xyz.Axis("prompt_sr", ["red", "blue"]), xyz.Axis("lora_weight", [0.2, 0.6]),
            xyz.Axis("hires_strength", [0.3])]
    cells = xyz.plan_cells(base, axes)
    assert [(c.x, c.y, c.params["prompt"], c.params["loras"][0]["weight"]) for c in cells] == [
        (0, 0, "a red fox", 0.2), (1, 0, "a blue fox", 0.2), (0, 1, "a red fox", 0.6), (1, 1, "a blue fox", 0.6)]
    assert all(c.params["hires_denoising_strength"] == 0.3 for c in cells)
    with pytest.raises(ValidationError, match="needs the hires fix turned on"):
        xyz.plan_cells({"seed": 5}, [xyz.Axis("hires_strength", [0.3])])
    assert base["loras"][0]["weight"] == 1.0  # the base request is not changed


def test_cjk_font_is_found():
    path, note = xyz.find_font()
    assert path is not None and "CJK" in path, note


def test_grid_has_labels_and_the_cells():
    axes = [xyz.Axis("prompt_sr", ["狐狸", "猫", "狗"]), xyz.Axis("steps", [2, 3])]
    cells = xyz.plan_cells({"prompt": "一只狐狸", "seed": 1}, axes)
    for number, cell in enumerate(cells):
        cell.image = Image.new("RGB", (64, 48), (40 * number, 100, 200))
    grid = xyz.grid_image(cells, axes)
    pixels = np.asarray(grid)
    left = grid.width - 3 * 64
    top = grid.height - 2 * 48
    assert left > 0 and top > 0
    assert (pixels[:top, left:] < 128).any()  # x labels written above
    assert (pixels[top:, :left] < 128).any()  # y labels written to the left
    assert tuple(pixels[top + 60, left + 64 + 10]) == (160, 100, 200)  # cell (1, 1) is the 5th image


def test_a_3x2_plot_encodes_each_distinct_prompt_once(manager):
    from bench.common import ForwardCounter

    base = request_from_dict({"prompt": "xyz 网格 a red fox", "negative_prompt": "xyz-grid-negative", "seed": 11,
                              "width": 256, "height": 256, "num_inference_steps": 2}).to_dict()
    axes = [xyz.Axis("prompt_sr", ["red", "blue", "绿色"]), xyz.Axis("steps", [2, 3])]
    cells = xyz.plan_cells(base, axes)
    counter = ForwardCounter(manager.load().text_encoder)
    progress = []

    def run_cell(params):
        result = generate(manager, request_from_dict(params))
        return result.images[0].image, result.images[0].parameters

    try:
        result = xyz.run_grid(cells, run_cell, axes, on_progress=lambda done, total: progress.append((done, total)))
    finally:
        counter.close()
    assert counter.calls == 4  # three prompts and one negative prompt, for six images
    assert progress == [(n, 6) for n in range(1, 7)]
    assert [c.result_params["prompt"] for c in result.cells[:3]] == ["xyz 网格 a red fox", "xyz 网格 a blue fox",
                                                                     "xyz 网格 a 绿色 fox"]
    assert [c.result_params["num_inference_steps"] for c in result.cells] == [2, 2, 2, 3, 3, 3]
    assert result.grid.width > 3 * 256 and result.grid.height > 2 * 256
    assert xyz.describe(axes) == {"Script": "X/Y/Z plot", "X Type": "Prompt S/R", "X Values": "red, blue, 绿色",
                                  "Y Type": "Steps", "Y Values": "2, 3"}


def test_stop_keeps_the_finished_cells(manager):
    base = {"prompt": "xyz stop", "seed": 3, "width": 256, "height": 256, "num_inference_steps": 1}
    axes = [xyz.Axis("seed", [1, 2, 3])]
    stop = threading.Event()

    def run_cell(params):
        result = generate(manager, request_from_dict(params))
        return result.images[0].image, result.images[0].parameters

    result = xyz.run_grid(xyz.plan_cells(base, axes), run_cell, axes,
                          on_progress=lambda done, _: stop.set() if done == 2 else None, stop=stop)
    assert result.stopped and [c.params["seed"] for c in result.cells] == [1, 2]
    assert result.grid is not None
