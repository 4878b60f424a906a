"""History: every image this visitor made, kept in their own browser (IndexedDB), never on the server.

The page script (static/studio.js) records each run, renders the entries, searches, deletes, clears, exports
and imports them, all in the browser. The server sees an entry only when the visitor restores it: its
parameters and its init/reference images, which the page uploads like any other image.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from kolors_app.ui.i18n import i18n


@dataclass
class HistoryTab:
    """The restore button and the hidden box through which the page hands over the entry to restore."""

    restore: gr.Button
    payload: gr.Textbox


def history_tab() -> HistoryTab:
    """Build the tab; the app wires restore, the page script fills the view."""
    with gr.Row():
        gr.Markdown(i18n("history_help"), elem_id="history-help")
        restore = gr.Button(i18n("restore"), variant="primary", scale=0, min_width=180, elem_id="history-restore")
    gr.HTML('<div id="kolors-history" class="kolors-history"></div>', elem_id="history-root")
    payload = gr.Textbox(visible=False)
    return HistoryTab(restore, payload)
