"""Pillow's patch: a lower cap on the memory a PNG's text chunks may take when decoded."""

from __future__ import annotations

from PIL import PngImagePlugin

from kolors_app.patches.versions import Touched

DISTRIBUTION = "pillow"
# Compressed PNG text expands up to 1 MB a chunk; Pillow's default total (64 MB) is far more than
# parameters ever need.
MAX_TEXT_MEMORY = 8 * 1024 * 1024
TOUCHED = {"cap_text_memory": (Touched("PIL.PngImagePlugin", "MAX_TEXT_MEMORY"),)}


def apply() -> None:
    """Cap the decoded text of one PNG (idempotent)."""
    cap_text_memory()


def cap_text_memory() -> None:
    """At most MAX_TEXT_MEMORY bytes of decoded text chunks per PNG; more is Pillow's ValueError."""
    PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, MAX_TEXT_MEMORY)
