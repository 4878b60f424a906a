"""Untrusted JSON bodies: parsed once, with a bound on how deeply they nest."""

from __future__ import annotations

import json
from typing import Any

from kolors_app.core.errors import ValidationError

# The deepest body the app takes (A1111's alwayson_scripts -> controlnet -> args -> unit) nests about 5 levels;
# the parser itself gives up with a RecursionError at about 1000, and later steps walk values recursively.
MAX_JSON_DEPTH = 64


def parse_json(data: bytes | str, field: str = "body", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The parsed value; ValidationError naming `field` for broken JSON or nesting deeper than `max_depth`."""
    try:
        value = json.loads(data)
    except ValueError as error:  # json.JSONDecodeError, and bytes that are no UTF-8
        raise ValidationError(field, f"not valid JSON ({error})") from None
    except RecursionError:
        raise ValidationError(field, f"nested deeper than {max_depth} levels", "too_many",
                              {"max_depth": max_depth}) from None
    if json_depth(value) > max_depth:
        raise ValidationError(field, f"nested deeper than {max_depth} levels", "too_many", {"max_depth": max_depth})
    return value


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest
