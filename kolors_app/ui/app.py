"""Compose the tabs into one Blocks app and wire what crosses tabs (restore, send-to, history)."""

from __future__ import annotations

import gradio as gr

from ..params import ValidationError, images_needed
from ..metadata import clean_parameters
from .controls import control_updates, selected_image
from .generate_tabs import GenerationTab, image_to_image_tab, ip_adapter_tab, text_to_image_tab
from .inpaint_tab import inpaint_tab
from .history_tab import history_state, history_tab, record_run, render
from .i18n import i18n
from .png_info_tab import png_info_tab
from .runner import AppContext, as_text

# Gradio's temporary files (uploads, gallery PNGs) are deleted once an hour when older than a day.
CACHE_CLEANUP = (3600, 86400)
CSS = """
#status-bar { font-size: 0.85em; opacity: 0.8; }
footer { display: none !important; }
"""


def restore_updates(tabs: dict[str, GenerationTab], tabs_box: gr.Tabs, parameters) -> dict:
    """Updates that put saved parameters into the tab of their mode and show that tab."""
    if not parameters:
        raise gr.Error("Nothing to restore: select an image or an entry first.", title="Nothing selected")
    try:
        parameters = clean_parameters(parameters)
    except ValidationError as error:
        raise gr.Error(as_text(str(error)), title="Invalid parameters") from None
    tab = tabs[parameters.get("mode", "text_to_image")]
    updates = control_updates(tab.controls, parameters)
    for name, slider in tab.sliders.items():
        if parameters.get(name) is not None:
            updates[slider] = parameters[name]
    updates[tabs_box] = gr.Tabs(selected=tab.mode)
    needed = images_needed(parameters)
    if needed:
        # Images are never stored in the parameters: say which ones the restored settings still need.
        gr.Info(as_text(f"Give these images again: {', '.join(needed)}"), title="Images")
    return updates


def restore_outputs(tabs: dict[str, GenerationTab], tabs_box: gr.Tabs) -> list:
    """Every component restore_updates may touch."""
    outputs = [tabs_box]
    for tab in tabs.values():
        c = tab.controls
        outputs += c.request_inputs() + [c.aspect] + list(tab.sliders.values())
    return outputs


def status_line(ctx: AppContext) -> str:
    """The status bar: model, device, dtype, offload and loading state."""
    return f"**{ctx.settings.model}** · {ctx.manager.status}"


def create_app(ctx: AppContext) -> gr.Blocks:
    """Build the whole UI around the given core objects; nothing is loaded or launched here."""
    with gr.Blocks(title="Kolors Studio", delete_cache=CACHE_CLEANUP) as app:
        # Outside the tabs: gradio mounts a tab's components when the tab is first opened, and the browser
        # store reads and writes localStorage only while mounted (inside the tab, history was never saved).
        store = history_state()
        gr.Markdown(f"## {i18n('title')}")
        status = gr.Markdown(status_line(ctx), elem_id="status-bar")
        with gr.Tabs() as tabs_box:
            with gr.Tab(i18n("text_to_image"), id="text_to_image"):
                t2i = text_to_image_tab(ctx)
            with gr.Tab(i18n("image_to_image"), id="image_to_image"):
                i2i = image_to_image_tab(ctx)
            with gr.Tab(i18n("ip_adapter"), id="ip_adapter"):
                ipa = ip_adapter_tab(ctx)
            with gr.Tab(i18n("inpaint"), id="inpaint"):
                inpainting = inpaint_tab(ctx)
            with gr.Tab(i18n("history"), id="history"):
                history = history_tab(store)
            with gr.Tab(i18n("png_info"), id="png_info"):
                png = png_info_tab()
        tabs = {tab.mode: tab for tab in (t2i, i2i, ipa, inpainting)}
        outputs = restore_outputs(tabs, tabs_box)

        def restore(parameters):
            return restore_updates(tabs, tabs_box, parameters)

        for tab in tabs.values():
            c = tab.controls
            c.use_settings.click(restore, c.selected, outputs, queue=False, api_visibility="private")
            c.send_i2i.click(lambda g, i: (selected_image(g, i), gr.Tabs(selected="image_to_image")),
                             [c.gallery, c.selected_index], [i2i.images["image"], tabs_box], queue=False,
                             api_visibility="private")
            c.send_ip.click(lambda g, i: (selected_image(g, i), gr.Tabs(selected="ip_adapter")),
                            [c.gallery, c.selected_index], [ipa.images["ip_adapter_image"], tabs_box],
                            queue=False, api_visibility="private")
            tab.run_event.then(record_run, [c.result, c.gallery, history.state],
                               [history.state, history.gallery, history.ids], queue=False, api_visibility="private")
            tab.run_event.then(lambda: status_line(ctx), None, status, queue=False, api_visibility="private")
        png.restore.click(restore, png.parameters, outputs, queue=False, api_visibility="private")
        history.restore.click(restore, history.selected, outputs, queue=False, api_visibility="private")
        app.load(render, history.state, [history.gallery, history.ids], queue=False, api_visibility="private")
        # The value above is the one at build time ("not loaded"); a new page shows the status of now.
        app.load(lambda: status_line(ctx), None, status, queue=False, api_visibility="private")
        gr.Timer(3.0).tick(lambda: status_line(ctx), None, status, queue=False, api_visibility="private")
    return app
