"""The README's configuration table, generated from the settings themselves (tests/test_config.py compares)."""

from __future__ import annotations

from kolors_app.core.config import _LIMIT_FIELDS, AUTO_SETTINGS, _default, _help, _setting_names


def settings_table() -> str:
    """The README's configuration table (Markdown), generated from the settings themselves."""
    rows = ["| flag | environment variable | default | what it does |", "| --- | --- | --- | --- |"]
    for name in _setting_names() + list(_LIMIT_FIELDS):
        default = _default(name)
        shown = "`auto`" if default is None and name in AUTO_SETTINGS else \
            "" if default in (None, ()) else f"`{default}`"
        text = _help(name).replace("|", "\\|")
        rows.append(f"| `--{name.replace('_', '-')}` | `KOLORS_{name.upper()}` | {shown} | {text} |")
    rows.append("| `--check` | | | check the install, device, memory plan, disk and downloads; "
                "exit non-zero if blocked |")
    return "\n".join(rows) + "\n"
