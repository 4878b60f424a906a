"""Dynamic prompts: `{red|blue|green}` becomes one choice per image, drawn from the image's seed.

The syntax is checked with the request (core/prompt_syntax.py); this module draws the choices.
"""

from __future__ import annotations

import random

from kolors_app.core.errors import ValidationError
from kolors_app.core.prompt_syntax import CHOICE, MAX_GROUPS


def has_choices(text: str) -> bool:
    """Whether the text holds at least one `{a|b}` group."""
    return bool(CHOICE.search(text or ""))


def resolve(text: str, seed: int, field_name: str = "prompt") -> str:
    """The text with every group replaced by one option; the same seed always picks the same options.

    Styles are applied before this, so their groups count too: more than MAX_GROUPS are refused, naming field_name.
    """
    rng = random.Random(f"dynamic-prompts:{seed}")
    for _ in range(MAX_GROUPS):
        match = CHOICE.search(text)
        if match is None:
            return text
        options = match.group(1).split("|")
        text = text[:match.start()] + rng.choice(options).strip() + text[match.end():]
    if CHOICE.search(text) is None:
        return text
    raise ValidationError(field_name, f"has more than {MAX_GROUPS} {{a|b}} groups", "too_many",
                          {"max_items": MAX_GROUPS})
