"""The page's progress updates: gradio answers a gr.skip() as before, without building the output anew."""

import asyncio

import gradio as gr
import pytest

from kolors_app.patches import gradio as gradio_patches


@pytest.fixture(scope="module")
def blocks():
    gradio_patches.apply()
    with gr.Blocks() as demo:
        text = gr.Textbox()
        data = gr.JSON()
        line = gr.Markdown()
        button = gr.Button()
        button.click(lambda: None, None, [text, data, line])
    return demo


def postprocess(blocks, predictions, gradios=False):
    block_fn = next(iter(blocks.fns.values()))
    method = gr.Blocks.postprocess_data.__wrapped__ if gradios else gr.Blocks.postprocess_data
    return asyncio.run(method(blocks, block_fn, predictions, None))


@pytest.mark.parametrize("predictions", [  # made anew for each call: gradio pops the value out of an update
    lambda: [gr.skip(), gr.skip(), "step 3/8"], lambda: [gr.skip(), {"seed": 1}, gr.skip()],
    lambda: [gr.skip()] * 3, lambda: ("a", {"b": 2}, "c"), lambda: ["a", gr.update(value={"c": 3}), gr.skip()]])
def test_the_answer_is_gradios_own(blocks, predictions):
    assert postprocess(blocks, predictions()) == postprocess(blocks, predictions(), gradios=True)
    assert postprocess(blocks, [gr.skip(), gr.skip(), "step 3/8"])[:2] == [{"__type__": "update"}] * 2


def test_a_real_update_still_changes_the_component(blocks):
    answer = postprocess(blocks, [gr.update(visible=False, value="hidden"), gr.skip(), "x"])
    assert answer[0] == {"__type__": "update", "visible": False, "value": "hidden"}
    assert answer[1:] == [{"__type__": "update"}, "x"]


def test_a_skip_builds_no_component(blocks, monkeypatch):
    built = []
    original = gr.JSON.__init__

    def counting(self, *args, **kwargs):
        built.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(gr.JSON, "__init__", counting)
    postprocess(blocks, ["a", gr.skip(), "c"])
    assert built == []
    postprocess(blocks, ["a", gr.update(label="seeds"), "c"])
    assert len(built) == 1  # an update with properties is still gradio's to build


def test_a_wrong_number_of_values_is_still_gradios_error(blocks):
    with pytest.raises(ValueError, match="didn.t return enough output values"):
        postprocess(blocks, [gr.skip(), "x"])
