"""Finished images as files: each PNG encoded once, and the outputs-folder copy written off the critical path."""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from kolors_app.outputs.history import OutputStore
from kolors_app.metadata.png_chunks import png_bytes

log = logging.getLogger(__name__)


def encode_png(image: Image.Image, parameters: dict[str, Any]) -> bytes:
    """The one encoding of a finished image: PNG with both parameter chunks, by the fast encoder (png_encoder.py)."""
    return png_bytes(image, parameters)


def write_served_png(data: bytes, folder: str | os.PathLike, name: str = "image.png") -> str:
    """Write PNG bytes into the folder the web server serves, under a subfolder named by their hash.

    Written to a temporary name and renamed, so the server never serves a partial file.
    """
    target = Path(folder) / hashlib.blake2b(data, digest_size=20).hexdigest()
    target.mkdir(parents=True, exist_ok=True)
    path = target / name
    if not path.exists():
        handle, temp_name = tempfile.mkstemp(dir=target, prefix=".image.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as temp_file:
                temp_file.write(data)
            os.replace(temp_name, path)
        except BaseException:
            if os.path.exists(temp_name):
                os.unlink(temp_name)
            raise
    return str(path.resolve())


class BackgroundSaver:
    """Saves finished images to an OutputStore on one background thread, in the order they were made.

    The answer to the visitor does not wait for the disk; each file is still written atomically
    (OutputStore.save), and the pending ones are written before the process exits normally.
    """

    def __init__(self, store: OutputStore):
        self.store = store
        self._pending: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="save-outputs", daemon=True)
        self._thread.start()
        atexit.register(self.wait, 30.0)

    def save(self, parameters: dict[str, Any], data: bytes) -> None:
        """Queue one encoded PNG for the outputs folder."""
        self._pending.put((parameters, data))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued image is written (or the timeout passes); True when none is left."""
        done = threading.Event()
        self._pending.put(done)
        return done.wait(timeout)

    def _work(self) -> None:
        while True:
            item = self._pending.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            parameters, data = item
            try:
                self.store.save(None, parameters, data=data)
            except Exception:  # a full disk must not end the thread: later images may still fit
                log.exception("could not save an image to %s", self.store.root)
