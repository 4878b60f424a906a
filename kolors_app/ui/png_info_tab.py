"""PNG info: read the generation parameters out of any PNG, ours or AUTOMATIC1111's."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..metadata import read_image_parameters
from ..params import ValidationError
from .i18n import i18n
from .runner import as_text


@dataclass
class PngInfoTab:
    """The file drop, the parameters found and the restore button."""

    file: gr.File
    parameters: gr.JSON
    text: gr.Textbox
    restore: gr.Button


def parameters_of(path: str | None):
    """(parsed parameters, raw A1111 text) of an uploaded file, or a clear error."""
    if not path:
        return None, ""
    try:
        found = read_image_parameters(path)
    except ValidationError as error:
        raise gr.Error(as_text(str(error)), title="Unreadable image") from None
    for warning in found.warnings:
        gr.Warning(as_text(warning))
    if not found.parameters:
        gr.Warning("This image carries no generation parameters.")
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
            text = gr.Textbox(label="parameters", lines=4, interactive=False, buttons=["copy"],
                              elem_id="png-info-text")
            restore = gr.Button(i18n("png_restore"), variant="primary", elem_id="png-info-restore")
    file.change(parameters_of, file, [parameters, text], api_visibility="private")
    return PngInfoTab(file, parameters, text, restore)
