"""History entries (kept in the visitor's browser) and the server-side outputs folder."""

from __future__ import annotations

import base64
import binascii
import errno
import io
import json
import logging
import math
import numbers
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from kolors_app.core.config import Limits
from kolors_app.media.image_guard import open_image
from kolors_app.core.schema import clean_parameters
from kolors_app.metadata.png_chunks import save_png
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import MAX_SEED

logger = logging.getLogger(__name__)

MAX_ENTRIES = 200
MAX_IMPORT_BYTES = 8 * 1024 * 1024
MAX_SEEDS = 64
THUMBNAIL_SIZE = 128
# A 128 px JPEG is a few kB; the cap keeps 200 entries well inside a browser's 5 MB localStorage.
MAX_THUMBNAIL_CHARS = 48_000
LATEST_TIME = 4_102_444_800.0  # 2100-01-01: later times are not real
EXPORT_FORMAT = "kolors-studio-history"
EXPORT_VERSION = 1
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
THUMBNAIL_PATTERN = re.compile(r"^data:image/(jpeg|png|webp);base64,([A-Za-z0-9+/]+={0,2})$")
THUMBNAIL_SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n", "webp": b"RIFF"}
STALE_TEMP_SECONDS = 3600
SEARCH_KEYS = ("prompt", "negative_prompt", "scheduler", "mode", "model")


def make_thumbnail(image: Image.Image, size: int = THUMBNAIL_SIZE) -> str:
    """A `data:image/jpeg;base64,...` URL of the image shrunk to fit `size` x `size`."""
    small = image.convert("RGB")
    small.thumbnail((size, size))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def make_entry(parameters: dict[str, Any], seeds: Iterable[int], image: Image.Image | None = None, *,
               now: float | None = None, entry_id: str | None = None) -> dict[str, Any]:
    """A new history entry: id, time, parameters, seeds and a small thumbnail of the first image."""
    return validate_entry({
        "id": entry_id or uuid.uuid4().hex,
        "time": time.time() if now is None else now,
        "parameters": parameters,
        "seeds": list(seeds),
        "thumbnail": make_thumbnail(image) if image is not None else "",
    })


def validate_entry(value: Any, field: str = "entry", limits: Limits = Limits()) -> dict[str, Any]:
    """A clean copy of one entry from outside; unknown keys are dropped, anything else wrong is refused."""
    if not isinstance(value, dict):
        raise ValidationError(field, f"must be an object, got {type(value).__name__}")
    for key in ("id", "time", "parameters"):
        if key not in value:
            raise ValidationError(f"{field}.{key}", "is missing")
    entry_id = value["id"]
    if not isinstance(entry_id, str) or not ID_PATTERN.fullmatch(entry_id):
        raise ValidationError(f"{field}.id", "must be 1 to 64 letters, digits, '-' or '_'")
    moment = value["time"]
    if isinstance(moment, bool) or not isinstance(moment, numbers.Real) or not math.isfinite(moment) \
            or not 0 <= moment <= LATEST_TIME:
        raise ValidationError(f"{field}.time", f"must be seconds since 1970 up to {LATEST_TIME:.0f}, got {moment!r}")
    return {
        "id": entry_id,
        "time": float(moment),
        "parameters": clean_parameters(value["parameters"], f"{field}.parameters", limits),
        "seeds": _seeds(value.get("seeds", []), f"{field}.seeds"),
        "thumbnail": _thumbnail(value.get("thumbnail", ""), f"{field}.thumbnail", limits),
    }


def _seeds(value: Any, field: str) -> list[int]:
    if not isinstance(value, list):
        raise ValidationError(field, f"must be a list, got {type(value).__name__}")
    if len(value) > MAX_SEEDS:
        raise ValidationError(field, f"has {len(value)} seeds; at most {MAX_SEEDS} allowed")
    for seed in value:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValidationError(field, f"must hold whole numbers from 0 to {MAX_SEED}, got {seed!r}")
    return list(value)


def _thumbnail(value: Any, field: str, limits: Limits) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a data:image/ URL, got {type(value).__name__}")
    if len(value) > MAX_THUMBNAIL_CHARS:
        raise ValidationError(field, f"is {len(value):,} characters; at most {MAX_THUMBNAIL_CHARS:,} allowed")
    match = THUMBNAIL_PATTERN.match(value)
    if not match:
        raise ValidationError(field, "must be a base64 data:image/jpeg, png or webp URL")
    kind, payload = match.groups()
    try:
        head = base64.b64decode(payload[:16])
    except binascii.Error:
        raise ValidationError(field, "holds invalid base64 data") from None
    if not head.startswith(THUMBNAIL_SIGNATURES[kind]):
        raise ValidationError(field, f"does not hold a {kind.upper()} image")
    # The header only: a few kB of PNG can hold a huge image, which the History tab would decode on every view.
    try:
        data = base64.b64decode(payload)
    except binascii.Error:
        raise ValidationError(field, "holds invalid base64 data") from None
    with open_image(data, limits, field) as image:  # its structure checked first, like any upload
        width, height = image.size
    if max(width, height) > THUMBNAIL_SIZE:
        raise ValidationError(field, f"is {width}x{height}; at most {THUMBNAIL_SIZE} px a side")
    return value


def add_entry(history: list[dict] | None, entry: dict, max_entries: int = MAX_ENTRIES) -> list[dict]:
    """A new history with `entry` first (replacing one with the same id), capped at `max_entries`.

    `history` is taken as clean: pass what the browser sends through sanitize_history first.
    """
    entry = validate_entry(entry)
    rest = [item for item in history or [] if item.get("id") != entry["id"]]
    return [entry, *rest][:max_entries]


def search(history: list[dict] | None, text: str) -> list[dict]:
    """Entries whose prompts, sampler, mode or seeds hold every word of `text` (case-insensitive)."""
    words = text.casefold().split()
    return [entry for entry in history or [] if all(word in _search_text(entry) for word in words)]


def _search_text(entry: dict) -> str:
    parameters = entry.get("parameters", {})
    parts = [str(parameters.get(key, "")) for key in SEARCH_KEYS]
    parts += [str(seed) for seed in entry.get("seeds", [])]
    return "\n".join(parts).casefold()


def delete(history: list[dict] | None, entry_id: str) -> list[dict]:
    """A new history without the entry `entry_id`."""
    return [entry for entry in history or [] if entry.get("id") != entry_id]


def clear() -> list[dict]:
    """An empty history."""
    return []


def export_json(history: list[dict]) -> str:
    """The history as a JSON document that import_json reads back."""
    document = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "entries": history}
    return json.dumps(document, ensure_ascii=False, indent=1, allow_nan=False)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def import_json(text: str | bytes, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_IMPORT_BYTES,
                limits: Limits = Limits()) -> list[dict]:
    """Entries from an exported history file, newest first; anything wrong is a ValidationError."""
    if not isinstance(text, (str, bytes)):
        raise ValidationError("history", f"must be JSON text, got {type(text).__name__}")
    size = len(text) if isinstance(text, bytes) or len(text) > max_bytes else len(text.encode("utf-8"))
    if size > max_bytes:
        raise ValidationError("history", f"is {size:,} bytes; at most {max_bytes:,} allowed")
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:  # json.JSONDecodeError is a ValueError
        raise ValidationError("history", f"is not valid JSON ({error})") from None
    if isinstance(document, dict):
        if document.get("format", EXPORT_FORMAT) != EXPORT_FORMAT:
            raise ValidationError("history.format", f"must be {EXPORT_FORMAT!r}, got {document.get('format')!r}")
        document = document.get("entries")
    if not isinstance(document, list):
        raise ValidationError("history.entries", "must be a list of entries")
    if len(document) > max_entries:
        raise ValidationError("history.entries", f"has {len(document)} entries; at most {max_entries} allowed")
    entries = _unique([validate_entry(item, f"history[{index}]", limits) for index, item in enumerate(document)])
    return sorted(entries, key=lambda entry: entry["time"], reverse=True)


def _unique(entries: list[dict]) -> list[dict]:
    seen: set[str] = set()
    kept = []
    for entry in entries:
        if entry["id"] not in seen:
            seen.add(entry["id"])
            kept.append(entry)
    return kept


def sanitize_history(value: Any, max_entries: int = MAX_ENTRIES, limits: Limits = Limits()) -> list[dict]:
    """The valid entries of a history the browser sent back, in its order, capped.

    Invalid entries are dropped and logged rather than refused: a stale or tampered browser store
    must not lock a visitor out of the app.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        logger.warning("history from the browser is a %s, not a list; ignored", type(value).__name__)
        return []
    entries = []
    for index, item in enumerate(value[:max_entries]):
        try:
            entries.append(validate_entry(item, f"history[{index}]", limits))
        except ValidationError as error:
            logger.warning("dropped a history entry from the browser: %s", error)
    return _unique(entries)


class OutputStore:
    """Saved images under `root/YYYY-MM-DD/NNNNN-<seed>.png` and an append-only `root/index.jsonl`.

    Every PNG appears whole or not at all (temp file, fsync, then an exclusive rename), and its index
    line is appended afterwards in one write, so a process killed at any point leaves readable PNGs,
    at worst one PNG missing from the index and one torn last index line, which readers skip and the
    next writer ends. Existing files are never overwritten.
    """

    INDEX_NAME = "index.jsonl"

    def __init__(self, root: str | os.PathLike, free_bytes: int = 0):
        self.root = Path(root)
        self.free_bytes = free_bytes  # disk left free for everything else on the server
        self.index_path = self.root / self.INDEX_NAME
        self._lock = threading.Lock()
        self._next_numbers: dict[Path, int] = {}

    def save_or_log(self, image: Image.Image | None, parameters: dict[str, Any], *,
                    data: bytes | None = None) -> Path | None:
        """save(), or None with the reason logged when the disk is full or unwritable: the visitor keeps the image."""
        try:
            return self.save(image, parameters, data=data)
        except OSError as error:
            logger.warning("server copy not saved: %s", error)
            return None

    def has_room(self) -> bool:
        """Whether the outputs disk has more than the free-space floor left."""
        try:
            return not self.free_bytes or shutil.disk_usage(self.root if self.root.exists() else
                                                            self.root.parent).free >= self.free_bytes
        except OSError:
            return False

    def save(self, image: Image.Image | None, parameters: dict[str, Any], *, now: float | None = None,
             data: bytes | None = None) -> Path:
        """Save one image with its parameters (`data`: its PNG already encoded); returns the new file's path.

        OSError(ENOSPC) when saving would leave less than `free_bytes` free on the disk.
        """
        now = time.time() if now is None else now
        folder = self.root / time.strftime("%Y-%m-%d", time.localtime(now))
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            if self.free_bytes and shutil.disk_usage(folder).free < self.free_bytes:
                raise OSError(errno.ENOSPC, f"less than {self.free_bytes >> 20} MB free on the outputs disk")
            number = self._next_numbers.get(folder) or self._scan_next_number(folder)
            while True:
                path = folder / _file_name(number, parameters.get("seed"))
                try:
                    save_png(image, parameters, path, overwrite=False, data=data)
                    break
                except FileExistsError:  # another process took this number
                    number += 1
            self._next_numbers[folder] = number + 1
            self._append_index({"path": path.relative_to(self.root).as_posix(), "time": now,
                                "parameters": parameters})
        return path

    @staticmethod
    def _scan_next_number(folder: Path) -> int:
        names = os.listdir(folder)
        _remove_stale_temp_files(folder, names)
        numbers_used = [int(match.group(1)) for name in names if (match := re.match(r"^(\d+)(?:-\d+)?\.png$", name))]
        return max(numbers_used, default=0) + 1

    def _append_index(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        if self._index_ends_torn():
            line = b"\n" + line  # end the torn line a killed writer left, so this one stays whole
        handle = os.open(self.index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(handle, view):]
            os.fsync(handle)
        finally:
            os.close(handle)

    def _index_ends_torn(self) -> bool:
        try:
            with open(self.index_path, "rb") as index:
                index.seek(0, os.SEEK_END)
                if index.tell() == 0:
                    return False
                index.seek(-1, os.SEEK_END)
                return index.read(1) != b"\n"
        except FileNotFoundError:
            return False

    def list_recent(self, n: int = 50) -> list[dict[str, Any]]:
        """The newest `n` saved images still on disk: {"path": Path, "time", "parameters"}, newest first."""
        if n <= 0 or not self.index_path.exists():
            return []
        block = 64 * 1024
        while True:
            lines, whole_file = self._last_lines(block)
            records = [record for record in map(self._record, reversed(lines)) if record is not None]
            if len(records) >= n or whole_file:
                return records[:n]
            block *= 4

    def _last_lines(self, block: int) -> tuple[list[bytes], bool]:
        with open(self.index_path, "rb") as index:
            end = index.seek(0, os.SEEK_END)
            start = max(0, end - block)
            index.seek(start)
            lines = index.read(end - start).split(b"\n")
        # The first piece of a block that starts mid-file is part of a line.
        return (lines if start == 0 else lines[1:]), start == 0

    def _record(self, line: bytes) -> dict[str, Any] | None:
        try:
            record = json.loads(line)
        except ValueError:  # a torn line, or bytes that are not UTF-8
            return None
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            return None
        path = (self.root / record["path"]).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return None
        return {"path": path, "time": record.get("time"), "parameters": record.get("parameters", {})}


def _remove_stale_temp_files(folder: Path, names: list[str]) -> None:
    # A writer killed mid-save leaves its temp file; one an hour old belongs to no running writer.
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            path = folder / name
            try:
                if time.time() - path.stat().st_mtime > STALE_TEMP_SECONDS:
                    path.unlink()
            except FileNotFoundError:  # another process removed it first
                pass


def _file_name(number: int, seed: Any) -> str:
    # Only a real integer seed goes into the name, so parameters can never shape the path.
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return f"{number:05d}-{seed}.png"
    return f"{number:05d}.png"
