"""History: every generation of this visitor, kept in their own browser, never on the server."""

from __future__ import annotations

import base64
import io
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

from .. import history as store
from ..images import load_image
from ..params import ValidationError
from .i18n import i18n
from .runner import as_text

STORAGE_KEY = "kolors-studio-history"


@dataclass
class HistoryTab:
    """The browser-side store and the components that show it."""

    state: gr.BrowserState
    query: gr.Textbox
    gallery: gr.Gallery
    ids: gr.State
    selected: gr.JSON
    restore: gr.Button


def history_secret() -> str:
    """The key gradio encrypts the browser store with; kept on disk so history survives a restart."""
    if os.environ.get("KOLORS_HISTORY_SECRET"):
        return os.environ["KOLORS_HISTORY_SECRET"]
    path = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "kolors-studio" / "history-secret"
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()
    except OSError:  # a read-only home (some Spaces): history then lasts until the server restarts
        return secrets.token_urlsafe(32)


def _thumbnail_image(entry: dict) -> Image.Image:
    data = entry.get("thumbnail", "")
    if not data:
        return Image.new("RGB", (64, 64), (230, 230, 230))
    return Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB")


def _caption(entry: dict) -> str:
    parameters = entry["parameters"]
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["time"]))
    prompt = parameters.get("prompt", "")
    # Seed and prompt first: the gallery cuts long captions short.
    return f"seed {parameters.get('seed')} · {prompt[:60]} · {stamp}"


def render(history, query: str = ""):
    """Gallery items and entry ids of the entries matching the search."""
    entries = store.search(store.sanitize_history(history), query or "")
    return [(_thumbnail_image(entry), _caption(entry)) for entry in entries], [entry["id"] for entry in entries]


def record_run(result: dict | None, gallery: list | None, history):
    """Add one entry per image of a finished run; returns the new history and its view."""
    history = store.sanitize_history(history)
    images = (result or {}).get("images") or []
    files = [item[0] if isinstance(item, (tuple, list)) else item for item in gallery or []]
    for parameters, path in reversed(list(zip(images, files))):
        try:
            # The browser names the gallery files: checked like any upload before a pixel is decoded.
            image = load_image(path, field="gallery", allowed_roots=[gr.utils.get_upload_folder()])
        except ValidationError as error:
            raise gr.Error(as_text(str(error)), title="Invalid input") from None
        history = store.add_entry(history, store.make_entry(parameters, [parameters["seed"]], image))
    return (history, *render(history))


def select(history, ids: list[str], event: gr.SelectData):
    """The parameters of the clicked entry, and its id."""
    entry_id = ids[event.index] if isinstance(event.index, int) and 0 <= event.index < len(ids) else None
    for entry in store.sanitize_history(history):
        if entry["id"] == entry_id:
            return entry["parameters"], entry_id
    return None, None


def delete(history, entry_id: str | None, query: str):
    """Remove the selected entry."""
    if not entry_id:
        raise gr.Error("Select an entry first.", title="Nothing selected")
    history = store.delete(store.sanitize_history(history), entry_id)
    return (history, *render(history, query), None, None)


def clear_all():
    """Forget every entry."""
    return [], [], [], None, None


def export(history) -> str:
    """Write the history to a temporary JSON file for download."""
    folder = tempfile.mkdtemp(prefix="kolors-history-")
    path = Path(folder) / "kolors-studio-history.json"
    path.write_text(store.export_json(store.sanitize_history(history)), encoding="utf-8")
    return str(path)


def import_file(path: str | None, history):
    """Merge an exported history file into this one (imported entries first), validated."""
    if not path:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        incoming = store.import_json(Path(path).read_bytes())
    except ValidationError as error:
        raise gr.Error(as_text(str(error)), title="Invalid history file") from None
    merged = store.sanitize_history(history)
    for entry in reversed(incoming):
        merged = store.add_entry(merged, entry)
    gr.Info(f"Imported {len(incoming)} entries.")
    return (merged, *render(merged))


def history_state() -> gr.BrowserState:
    """The browser-side store; create it outside any tab (see create_app)."""
    return gr.BrowserState([], storage_key=STORAGE_KEY, secret=history_secret())


def history_tab(state: gr.BrowserState) -> HistoryTab:
    """Build the tab around the store; the app adds entries after each run and wires restore."""
    gr.Markdown(i18n("history_help"))
    with gr.Row():
        query = gr.Textbox(label=i18n("search"), scale=4, elem_id="history-search")
        restore = gr.Button(i18n("restore"), variant="primary", elem_id="history-restore")
        remove = gr.Button(i18n("delete"), elem_id="history-delete")
        clear = gr.Button(i18n("clear"), variant="stop", elem_id="history-clear")
    with gr.Row():
        gallery = gr.Gallery(label=i18n("history"), columns=6, height=420, allow_preview=False,
                             interactive=False, elem_id="history-gallery")
        selected = gr.JSON(label=i18n("parameters"), elem_id="history-selected")
    with gr.Row():
        export_button = gr.Button(i18n("export"), size="sm", elem_id="history-export")
        upload = gr.UploadButton(i18n("import"), file_types=[".json"], type="filepath", size="sm",
                                 elem_id="history-import")
    # Hidden until there is a file: an empty file box is a large blank area.
    exported = gr.File(label=i18n("export"), visible=False, interactive=False, elem_id="history-file")
    ids, selected_id = gr.State([]), gr.State(None)

    # A new list drops the selection: the gallery would highlight another entry than the one selected.
    query.change(lambda history, text: (*render(history, text), None, None), [state, query],
                 [gallery, ids, selected, selected_id], queue=False, api_visibility="private")
    gallery.select(select, [state, ids], [selected, selected_id], queue=False, api_visibility="private")
    remove.click(delete, [state, selected_id, query], [state, gallery, ids, selected, selected_id], queue=False,
                 api_visibility="private")
    clear.click(clear_all, None, [state, gallery, ids, selected, selected_id], queue=False,
                api_visibility="private")
    export_button.click(lambda history: gr.File(export(history), visible=True), state, exported, queue=False,
                        api_visibility="private")
    upload.upload(import_file, [upload, state], [state, gallery, ids], queue=False, api_visibility="private")
    return HistoryTab(state, query, gallery, ids, selected, restore)
