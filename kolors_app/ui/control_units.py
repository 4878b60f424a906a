"""The ControlNet accordion (up to three units) and the control_* API parameters every generate endpoint takes."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import gradio as gr

from ..params import CONTROL_TYPES, MAX_CONTROL_UNITS, ControlUnit, control_name
from .i18n import i18n

# The API names of one unit's parameters, in input order (control_type, ..., then control_type_2, ...).
UNIT_FIELDS = ("type", "image", "preprocess", "scale", "start", "end")
DEFAULTS = {"type": "none", "image": None, "preprocess": True, "scale": 0.7, "start": 0.0, "end": 0.9}


@dataclass
class ControlUnitsBox:
    """The components of the accordion: per unit, its inputs by field (the maps a run made show in its gallery)."""

    inputs: list[dict[str, gr.components.Component]]

    def input_list(self) -> list:
        """Every unit's inputs, in the order the handlers take them."""
        return [unit[name] for unit in self.inputs for name in UNIT_FIELDS]

    def restorable(self) -> dict[str, gr.components.Component]:
        """Flat parameter name -> component, for restoring saved parameters (images must be given again)."""
        return {control_name(name, index): component for index, unit in enumerate(self.inputs)
                for name, component in unit.items() if name != "image"}


def control_accordion(mode: str) -> ControlUnitsBox:
    """Lay out up to three units inside a closed accordion."""
    units = []
    with gr.Accordion(i18n("controlnet"), open=False, elem_id=f"{mode}-controlnet"):
        with gr.Tabs():
            for index in range(MAX_CONTROL_UNITS):
                with gr.Tab(f"{i18n('control_unit')} {index + 1}"):
                    prefix = f"{mode}-control-{index + 1}"
                    image = gr.Image(label=i18n("control_image"), sources=["upload", "clipboard"], height=220,
                                     type="filepath", image_mode=None, elem_id=f"{prefix}-image")
                    with gr.Row():
                        kind = gr.Dropdown(["none", *CONTROL_TYPES], value="none", label=i18n("control_type"),
                                           elem_id=f"{prefix}-type")
                        preprocess = gr.Checkbox(True, label=i18n("control_preprocess"), elem_id=f"{prefix}-preprocess")
                    with gr.Row():
                        scale = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label=i18n("control_scale"),
                                          elem_id=f"{prefix}-scale")
                        start = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label=i18n("control_start"),
                                          elem_id=f"{prefix}-start")
                        end = gr.Slider(0.0, 1.0, value=0.9, step=0.05, label=i18n("control_end"),
                                        elem_id=f"{prefix}-end")
                    units.append({"type": kind, "image": image, "preprocess": preprocess, "scale": scale,
                                  "start": start, "end": end})
    return ControlUnitsBox(units)


def control_parameters() -> list[inspect.Parameter]:
    """The handlers' keyword parameters: control_type ... control_end, then the same with _2 and _3."""
    return [inspect.Parameter(control_name(name, index), inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              default=DEFAULTS[name])
            for index in range(MAX_CONTROL_UNITS) for name in UNIT_FIELDS]


def with_control_parameters(handler, load_image):
    """A handler taking the control_* parameters too; `handler` receives them as `controls=[ControlUnit, ...]`.

    load_image(field, value) opens an uploaded image safely (or refuses it naming the field).
    """
    signature = inspect.signature(handler)
    own = [p for p in signature.parameters.values() if p.name != "controls"]
    position = next(i for i, p in enumerate(own) if p.name == "request")
    # gradio fills `request` and `progress` itself; a default keeps the signature valid after the control ones.
    own = own[:position] + [p.replace(default=None) if p.default is inspect.Parameter.empty else p
                            for p in own[position:]]
    names = [p.name for p in control_parameters()]

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        bound = inspect.Signature(own[:position] + control_parameters() + own[position:]).bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        units = units_from({name: values.pop(name) for name in names}, load_image)
        yield from handler(**values, controls=units)

    wrapper.__signature__ = inspect.Signature(own[:position] + control_parameters() + own[position:])
    del wrapper.__wrapped__  # gradio must read the signature above, not the handler's
    return wrapper


def units_from(values: dict, load_image) -> list[ControlUnit]:
    """The units whose type is not "none", their images opened (missing ones are refused by validation)."""
    units = []
    for index in range(MAX_CONTROL_UNITS):
        kind = values[control_name("type", index)]
        if kind in (None, "", "none"):
            continue
        image = load_image(control_name("image", index), values[control_name("image", index)])
        units.append(ControlUnit(kind, image, *(values[control_name(name, index)]
                                                for name in ("preprocess", "scale", "start", "end"))))
    return units
