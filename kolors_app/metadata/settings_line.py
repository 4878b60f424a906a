"""A1111's settings line, `Key: value, Key: "quoted, value"`: quoting values and reading the pairs back."""

from __future__ import annotations

import json
import re
from typing import Any

# A1111's pattern for one `Key: value` pair; a value is JSON-quoted when it holds a comma, colon or quote.
PARAM_PATTERN = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(value: Any) -> str:
    """A1111's quoting: JSON double quotes when the value would break the `Key: value, ...` line."""
    text = str(value)
    if any(mark in text for mark in (",", ":", "\n", '"')):
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    """Undo `quote`; text that is not a valid JSON string is kept as written."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def number_text(value: Any) -> str:
    """A number as the line writes it."""
    # repr of a float is the shortest text that reads back as the same float.
    return repr(float(value)) if isinstance(value, float) else str(value)


def settings_pairs(line: str) -> list[tuple[str, str]]:
    """The `Key: value` pairs of an A1111 settings line, read left to right; text that is no pair is skipped."""
    pairs, position = [], 0
    # Matching at each position in turn, not re.findall, keeps this linear: findall retries the key
    # pattern at every character, which takes minutes on a hostile 100 kB line without colons.
    while position < len(line):
        match = PARAM_PATTERN.match(line, position)
        if match:
            pairs.append((match.group(1), match.group(2)))
            position = match.end()
            continue
        comma = line.find(",", position)
        if comma < 0:
            break
        position = comma + 1
    return pairs
