"""PNG info: read the generation parameters out of any PNG, ours or AUTOMATIC1111's."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from kolors_app.metadata.png_chunks import read_image_parameters
from kolors_app.core.errors import ValidationError
from kolors_app.ui.i18n import i18n, tr
from kolors_app.ui.runner import as_text


@dataclass
class PngInfoTab:
    """The file drop, the parameters found and the restore button."""

    file: gr.File
    parameters: gr.JSON
    text: gr.Textbox
    restore: gr.Button


def parameters_of(path: str | None, request: gr.Request = None):
    """(parsed parameters, raw A1111 text) of an uploaded file; a toast says what is wrong."""
    if not path:
        return None, ""
    try:
        found = read_image_parameters(path)
    except ValidationError as error:
        gr.Warning(as_text(str(error)), title=tr(request, "title_unreadable"))
        return None, ""
    for warning in found.warnings:
        gr.Warning(as_text(warning), title=tr(request, "title_warning"))
    if not found.parameters:
        gr.Warning(tr(request, "no_parameters"), title=tr(request, "title_warning"))
        return None, ""
    return found.parameters, found.text or ""


def png_info_tab() -> PngInfoTab:
    """Build the tab; the restore button is wired by the app, which knows every tab."""
    with gr.Row():
        with gr.Column():
            file = gr.File(label=i18n("png_drop"), file_types=[".png", ".jpg", ".jpeg", ".webp"], type="filepath",
                           elem_id="png-info-file")
        with gr.Column():
            parameters = gr.JSON(label=i18n("png_parameters"), elem_id="png-info-parameters")
            text = gr.Textbox(label=i18n("png_text"), lines=4, interactive=False, buttons=["copy"],
                              elem_id="png-info-text")
            restore = gr.Button(i18n("png_restore"), variant="primary", elem_id="png-info-restore")
    file.change(parameters_of, file, [parameters, text], show_progress="hidden", api_visibility="private")
    return PngInfoTab(file, parameters, text, restore)
