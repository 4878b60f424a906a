"""The ControlNet accordion (up to three units) and the control_* parameters every generate endpoint takes.

The API names are flat, as in the PNG metadata: unit 1 is `control_type`, `control_image`, ..., unit 2 the same
with `_2`, unit 3 with `_3`. A handler wrapped by `with_control_parameters` takes them all, with defaults, and
receives the raw values as `control_values`; `units_from` turns those into ControlUnit parts.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import gradio as gr

from kolors_app.core.errors import ValidationError
from kolors_app.core.request import CONTROL_TYPES, MAX_CONTROL_UNITS, ControlUnit, control_name
from kolors_app.core.validation import validate_controls
from kolors_app.control.preprocessors import control_map
from kolors_app.media.images import load_image
from kolors_app.ui.i18n import i18n, tr
from kolors_app.ui.runner import AppContext, as_text

# One unit's parameters in input order (control_type ... control_high_threshold, then the same with _2, _3).
UNIT_FIELDS = ("type", "image", "preprocess", "scale", "start", "end", "low_threshold", "high_threshold")
DEFAULTS = {"type": "none", "image": None, "preprocess": True, "scale": 0.7, "start": 0.0, "end": 0.9,
            "low_threshold": 100, "high_threshold": 200}
CONTROL_ARGS = """
        control_type: A ControlNet unit: "none" (default), "canny" (edges), "depth" or "pose"; with "canny", "depth" \
or "pose", `control_image` is required.
        control_image: The unit's picture: a photo to make the map from, or the map itself \
with `control_preprocess` false.
        control_preprocess: Make the map from `control_image` (default true); false when it already is a map.
        control_scale: How strongly the map steers the image, 0 to 2 (default 0.7; 0 = as without the unit).
        control_start: The fraction of the steps where the unit starts acting, 0 to 1 (default 0.0).
        control_end: The fraction where it stops, above control_start up to 1 (default 0.9).
        control_low_threshold: Canny's lower threshold, 0 to 255 (default 100).
        control_high_threshold: Canny's upper threshold, at least the lower one, up to 255 (default 200).
        control_type_2 ... control_high_threshold_2, control_type_3 ... control_high_threshold_3: a second and a \
third unit, the same parameters with `_2` and `_3` (e.g. depth + pose)."""


def type_choices() -> list:
    return [(i18n("control_none"), "none"), ("Canny", "canny"), (i18n("control_depth"), "depth"),
            (i18n("control_pose"), "pose")]


@dataclass
class ControlUnitsBox:
    """The accordion's components: per unit, its inputs by field, its map preview and its two buttons."""

    units: list[dict[str, gr.components.Component]]
    maps: list[gr.Image] = field(default_factory=list)

    def input_list(self) -> list:
        """Every unit's inputs, in the order the handlers take them."""
        return [unit[name] for unit in self.units for name in UNIT_FIELDS]

    def restorable(self) -> dict[str, gr.components.Component]:
        """Flat parameter name -> component, for restoring saved parameters (images are given again)."""
        return {control_name(name, index): component for index, unit in enumerate(self.units)
                for name, component in unit.items() if name != "image"}

    def images(self) -> dict[str, gr.Image]:
        """Flat parameter name -> the unit's image input (control_image, control_image_2, ...)."""
        return {control_name("image", index): unit["image"] for index, unit in enumerate(self.units)}


def control_accordion(ctx: AppContext, mode: str) -> ControlUnitsBox:
    """Lay out up to three units inside a closed accordion, each with a map preview that can be fed back."""
    box = ControlUnitsBox([])
    with gr.Accordion(i18n("controlnet"), open=False, elem_id=f"{mode}-controlnet"):
        gr.Markdown(i18n("control_help"), elem_classes="studio-note")
        with gr.Tabs():
            for index in range(MAX_CONTROL_UNITS):
                with gr.Tab(i18n(f"control_unit_{index + 1}"), id=f"{mode}-unit-{index + 1}"):
                    _unit(ctx, box, mode, index)
    return box


def _unit(ctx: AppContext, box: ControlUnitsBox, mode: str, index: int) -> None:
    prefix = f"{mode}-control-{index + 1}"
    with gr.Row():
        kind = gr.Dropdown(type_choices(), value="none", label=i18n("control_type"), elem_id=f"{prefix}-type")
        preprocess = gr.Checkbox(True, label=i18n("control_preprocess"), elem_id=f"{prefix}-preprocess")
    with gr.Row():
        image = gr.Image(label=i18n("control_image"), sources=["upload", "clipboard"], height=220, type="filepath",
                         image_mode=None, elem_id=f"{prefix}-image")
        made = gr.Image(label=i18n("control_map"), type="filepath", format="png", height=220, interactive=False,
                        buttons=["download"], elem_id=f"{prefix}-map")
    with gr.Row():
        scale = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label=i18n("control_scale"), elem_id=f"{prefix}-scale")
        start = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label=i18n("control_start"), elem_id=f"{prefix}-start")
        end = gr.Slider(0.0, 1.0, value=0.9, step=0.05, label=i18n("control_end"), elem_id=f"{prefix}-end")
    with gr.Row():
        low = gr.Slider(0, 255, value=100, step=1, label=i18n("control_low"), elem_id=f"{prefix}-low")
        high = gr.Slider(0, 255, value=200, step=1, label=i18n("control_high"), elem_id=f"{prefix}-high")
    with gr.Row():
        show = gr.Button(i18n("control_show_map"), size="sm", elem_id=f"{prefix}-show-map")
        feed = gr.Button(i18n("control_use_map"), size="sm", elem_id=f"{prefix}-use-map")
    unit = {"type": kind, "image": image, "preprocess": preprocess, "scale": scale, "start": start, "end": end,
            "low_threshold": low, "high_threshold": high}
    box.units.append(unit)
    box.maps.append(made)

    def preview(kind_value, image_value, preprocess_value, low_value, high_value, request: gr.Request = None):
        return preview_map(ctx, index, kind_value, image_value, preprocess_value, low_value, high_value, request)

    # Depth and pose load their estimator on first use: in the GPU queue, one at a time, as a run would.
    show.click(preview, [kind, image, preprocess, low, high], made, concurrency_id="gpu", concurrency_limit=1,
               preprocess=False, show_progress="minimal", api_visibility="private")
    feed.click(use_map, made, [image, preprocess], preprocess=False, queue=True, show_progress="hidden",
               api_visibility="private")


def _path(value) -> str | None:
    return (value.get("path") or value.get("url")) if isinstance(value, dict) else value


def preview_map(ctx: AppContext, index: int, kind, image, preprocess, low, high, request: gr.Request | None):
    """The map this unit would feed its ControlNet, to see, download or use as the image; errors are toasts."""
    try:  # checked as unit 1 (its names have no suffix), then named as this unit
        if kind in (None, "", "none"):
            raise ValidationError("control_type", tr(request, "control_choose_type"))
        picture = load_image(_path(image), ctx.settings.limits, field="control_image",
                             allowed_roots=[gr.utils.get_upload_folder()]) if _path(image) else None
        unit = validate_controls([ControlUnit(kind, picture, preprocess, 0.7, 0.0, 0.9, low, high)],
                                 ctx.settings.limits)[0]
        return control_map(unit, unit.image, ctx.manager.estimators)
    except ValidationError as error:
        name = control_name(error.field.removeprefix("control_"), index)
        gr.Warning(as_text(name + str(error)[len(error.field):]), title=tr(request, "title_invalid_input"))
        return gr.skip()


def use_map(made, request: gr.Request | None = None):
    """The shown map becomes the unit's image, with preprocessing off (it already is a map)."""
    path = _path(made)
    if not path:
        gr.Warning(tr(request, "control_no_map"), title=tr(request, "title_nothing_selected"))
        return gr.skip(), gr.skip()
    gr.Info(tr(request, "control_map_used"), title=tr(request, "title_info"))
    return path, False


def control_parameters() -> list[inspect.Parameter]:
    """The handlers' keyword parameters: control_type ... control_high_threshold, then with _2 and _3."""
    return [inspect.Parameter(control_name(name, index), inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              default=DEFAULTS[name])
            for index in range(MAX_CONTROL_UNITS) for name in UNIT_FIELDS]


def with_control_parameters(handler):
    """`handler` with the control_* parameters added before `request`; it receives them as `control_values`.

    The wrapper is of the handler's kind (generator, coroutine or plain function), as gradio inspects it.
    """
    signature = inspect.signature(handler)
    own = [p for p in signature.parameters.values() if p.name != "control_values"]
    position = next(i for i, p in enumerate(own) if p.name == "request")
    # gradio fills `request` (and `progress`) itself; a default keeps the signature valid after the control ones.
    tail = [p.replace(default=None) if p.default is inspect.Parameter.empty else p for p in own[position:]]
    new_signature = inspect.Signature(own[:position] + control_parameters() + tail)
    names = [p.name for p in control_parameters()]

    def split(args, kwargs):
        bound = new_signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        return values, {name: values.pop(name) for name in names}

    if inspect.isasyncgenfunction(handler) or not (inspect.isgeneratorfunction(handler)
                                                   or inspect.iscoroutinefunction(handler)):
        raise TypeError("with_control_parameters wraps generators and coroutines")
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def wrapper(*args, **kwargs):
            values, control = split(args, kwargs)
            yield from handler(**values, control_values=control)
    else:
        @functools.wraps(handler)
        async def wrapper(*args, **kwargs):
            values, control = split(args, kwargs)
            return await handler(**values, control_values=control)

    wrapper.__signature__ = new_signature
    del wrapper.__wrapped__  # gradio must read the signature above, not the handler's
    return wrapper


def units_from(values: dict, image_of) -> list[ControlUnit]:
    """The units whose type is not "none", their images opened by `image_of(name, value, required)`."""
    units = []
    for index in range(MAX_CONTROL_UNITS):
        kind = values.get(control_name("type", index))
        if kind in (None, "", "none"):
            continue
        name = control_name("image", index)
        image = image_of(name, values.get(name), False)
        units.append(ControlUnit(kind, image, *(values.get(control_name(attribute, index), DEFAULTS[attribute])
                                                for attribute in UNIT_FIELDS[2:])))
    return units


__all__ = ["CONTROL_ARGS", "CONTROL_TYPES", "ControlUnitsBox", "control_accordion", "units_from",
           "with_control_parameters"]
