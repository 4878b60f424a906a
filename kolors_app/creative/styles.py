"""Prompt styles: AUTOMATIC1111's styles.csv format plus a bilingual set shipped in assets/styles.csv."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from kolors_app.core.errors import ValidationError

SHIPPED_STYLES = Path(__file__).resolve().parents[2] / "assets" / "styles.csv"
PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class Style:
    """One style: text added to (or wrapped around, with {prompt}) the prompt and the negative prompt."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""


def parse_styles(text: str) -> dict[str, Style]:
    """Styles from the text of a styles.csv (header `name,prompt,negative_prompt`, as A1111 writes it)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if reader.fieldnames is None or "name" not in reader.fieldnames:
        raise ValueError("a styles file needs a header row with at least a 'name' column")
    styles = {}
    for row in reader:
        name = (row.get("name") or "").strip()
        if name:
            styles[name] = Style(name, row.get("prompt") or "", row.get("negative_prompt") or "")
    return styles


def read_styles(*paths: str | Path) -> dict[str, Style]:
    """The shipped styles, then those of each existing file (a later file wins on a name clash)."""
    styles = parse_styles(SHIPPED_STYLES.read_text(encoding="utf-8"))
    for path in paths:
        if path and Path(path).is_file():
            styles.update(parse_styles(Path(path).read_text(encoding="utf-8")))
    return styles


def merge_text(template: str, text: str) -> str:
    """A1111's rule: fill {prompt} with the text, or append the template after a comma."""
    if not template:
        return text
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, text)
    return f"{text}, {template}" if text.strip() else template


def check_names(names: list[str], styles: dict[str, Style]) -> list[str]:
    """The style names, each known here (their list was checked with the request); an unknown one is refused."""
    unknown = [name for name in names if name not in styles]
    if unknown:
        raise ValidationError("styles", f"unknown style {unknown[0]!r}; known: {', '.join(sorted(styles))}",
                              "unknown_choice", sorted(styles))
    return list(names)


def apply_styles(prompt: str, negative_prompt: str, names: list[str], styles: dict[str, Style]) -> tuple[str, str]:
    """The styled prompt and negative prompt, the styles applied in the order given."""
    for name in check_names(names, styles):
        style = styles[name]
        prompt = merge_text(style.prompt, prompt)
        negative_prompt = merge_text(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt
