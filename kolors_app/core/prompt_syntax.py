"""Prompt syntax read before any model work: A1111's `<lora:name:weight>` tags and `{a|b}` choices."""

from __future__ import annotations

import re

from kolors_app.core.creative_fields import LoraChoice
from kolors_app.core.errors import ValidationError

# A1111's prompt syntax: <lora:name> or <lora:name:0.8>.
LORA_TAG = re.compile(r"<lora:([^:<>]+?)(?::\s*(-?\d+(?:\.\d+)?)\s*)?>")
# The innermost group holding a `|`; `{prompt}` (a style placeholder) has none and is left alone.
CHOICE = re.compile(r"\{([^{}]*\|[^{}]*)\}")
MAX_GROUPS = 64


def split_lora_tags(prompt: str) -> tuple[str, list[LoraChoice]]:
    """Remove every <lora:name:weight> from the prompt (ChatGLM never sees them); return the text and the choices."""
    choices = [LoraChoice(match.group(1).strip(), float(match.group(2)) if match.group(2) else 1.0)
               for match in LORA_TAG.finditer(prompt or "")]
    text = LORA_TAG.sub("", prompt or "")
    return re.sub(r"\s*,\s*(,\s*)+", ", ", re.sub(r"[ \t]{2,}", " ", text)).strip(" ,"), choices


def check_choice_syntax(text: str, field_name: str = "prompt") -> None:
    """Refuse an unbalanced brace in a prompt that uses {a|b} choices, or too many choices, naming the field."""
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
        raise ValidationError(field_name, f"has {count} choices; at most {MAX_GROUPS * 8}", "too_many",
                              {"max_items": MAX_GROUPS * 8})
    if count_groups(text) > MAX_GROUPS:
        raise ValidationError(field_name, f"has more than {MAX_GROUPS} {{a|b}} groups", "too_many",
                              {"max_items": MAX_GROUPS})


def count_groups(text: str) -> int:
    """How many {a|b} groups resolving the text replaces (nested ones too), counted up to MAX_GROUPS + 1."""
    count = 0
    while count <= MAX_GROUPS:
        text, found = CHOICE.subn("x", text)  # innermost groups first, as dynamic prompts resolve them
        if not found:
            break
        count += found
    return count
