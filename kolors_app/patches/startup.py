"""Check every patched library at start (names present, version in the tested range) and apply the patches."""

from __future__ import annotations

from kolors_app.patches import accelerate, diffusers, gradio, pillow
from kolors_app.patches.versions import UnsupportedLibrary, missing_message, missing_names, range_warning

LIBRARIES = (gradio, diffusers, accelerate, pillow)


def blockers() -> list[str]:
    """One message per library that lacks a name its patches touch."""
    found = ((library.DISTRIBUTION, missing_names(library.TOUCHED)) for library in LIBRARIES)
    return [missing_message(distribution, missing) for distribution, missing in found if missing]


def warnings() -> list[str]:
    """One warning per library installed outside its tested range."""
    return [text for text in (range_warning(library.DISTRIBUTION) for library in LIBRARIES) if text]


def require_supported() -> list[str]:
    """Raise UnsupportedLibrary naming every missing name; else the out-of-range warnings."""
    problems = blockers()
    if problems:
        raise UnsupportedLibrary("Kolors Studio cannot start:\n" + "\n".join(f"- {text}" for text in problems))
    return warnings()


def apply() -> None:
    """Apply the patches of library classes and modules (idempotent); per-app and per-call ones are used in place."""
    gradio.apply()
    pillow.apply()
