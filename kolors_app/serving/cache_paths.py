"""Result files named without the server's folders: `<hash>/<name>` inside gradio's cache folder.

gradio answers every file with its absolute path on the server (FileData `path`, and the same path inside its
`url`). The program endpoints answer with the name inside the cache folder instead; the file route takes that
name back (gradio_client builds `file=<path>` from it).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

FILE_ROUTE = "/gradio_api/file="
# The hash folder of write_served_png (blake2b, 20 bytes) or of gradio's own uploads (sha256), then a file name.
CACHE_NAME = re.compile(r"^[0-9a-f]{40,64}/[^/\\.][^/\\]*$")


def cache_name(path: str, folder: str | os.PathLike) -> str | None:
    """`<hash>/<name>` of a file inside `folder`, or None for any other path."""
    try:
        relative = Path(path).resolve().relative_to(Path(folder).resolve())
    except (ValueError, OSError):
        return None
    name = relative.as_posix()
    return name if CACHE_NAME.match(name) else None


def cache_file(name: str, folder: str | os.PathLike) -> Path | None:
    """The file a `<hash>/<name>` names inside `folder`, or None when it is no such name."""
    return Path(folder) / name if CACHE_NAME.match(name or "") else None


def hide_cache_paths(value: Any, folder: str | os.PathLike) -> Any:
    """`value` (gradio's serialized outputs) with each FileData inside `folder` named by its cache name."""
    if isinstance(value, list):
        return [hide_cache_paths(item, folder) for item in value]
    if not isinstance(value, dict):
        return value
    if isinstance(value.get("path"), str) and "url" in value:
        name = cache_name(value["path"], folder)
        if name is not None:
            return {**value, "path": name, "url": FILE_ROUTE + urllib.parse.quote(name)}
        return value
    return {key: hide_cache_paths(item, folder) for key, item in value.items()}


def served_scope(scope, folder: str | os.PathLike) -> dict | None:
    """The scope of a file request by cache name, turned into gradio's request by path; None for other requests."""
    path = scope.get("path", "")
    start = path.find(FILE_ROUTE)
    if start < 0:
        return None
    file = cache_file(path[start + len(FILE_ROUTE):], folder)
    if file is None:
        return None
    new_path = path[:start + len(FILE_ROUTE)] + str(file)
    return {key: value for key, value in scope.items() if key != "raw_path"} | {"path": new_path}
