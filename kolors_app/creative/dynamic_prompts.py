"""Dynamic prompts: `{red|blue|green}` becomes one choice per image, drawn from the image's seed."""

from __future__ import annotations

import random
import re

from kolors_app.core.params import ValidationError

# The innermost group holding a `|`; `{prompt}` (a style placeholder) has none and is left alone.
CHOICE = re.compile(r"\{([^{}]*\|[^{}]*)\}")
MAX_GROUPS = 64


def has_choices(text: str) -> bool:
    """Whether the text holds at least one `{a|b}` group."""
    return bool(CHOICE.search(text or ""))


def resolve(text: str, seed: int) -> str:
    """The text with every group replaced by one option; the same seed always picks the same options."""
    rng = random.Random(f"dynamic-prompts:{seed}")
    for _ in range(MAX_GROUPS):
        match = CHOICE.search(text)
        if match is None:
            return text
        options = match.group(1).split("|")
        text = text[:match.start()] + rng.choice(options).strip() + text[match.end():]
    raise ValidationError("prompt", f"has more than {MAX_GROUPS} {{a|b}} groups")


def check(text: str, field_name: str = "prompt") -> None:
    """Refuse an unbalanced brace in a prompt that uses choices, naming the field."""
    if "|" not in (text or "") or not ({"{", "}"} & set(text)):
        return
    depth = 0
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            break
    if depth:
        raise ValidationError(field_name, "has unbalanced { } in its {a|b} choices")
    count = text.count("|")
    if count > MAX_GROUPS * 8:
        raise ValidationError(field_name, f"has {count} choices; at most {MAX_GROUPS * 8}")
