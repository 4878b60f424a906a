"""Example prompts, read from the JSON files in `prompts/`."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"


@lru_cache(maxsize=1)
def load_examples(folder: Path = PROMPTS_DIR) -> tuple[dict, ...]:
    """Every example prompt, each with its category's English name under `category` (Chinese: `category_zh`)."""
    examples = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        category = data.get("category", {}).get("en", path.stem)
        category_zh = data.get("category", {}).get("zh", category)
        examples.extend({**item, "category": category, "category_zh": category_zh} for item in data.get("prompts", []))
    return tuple(examples)
