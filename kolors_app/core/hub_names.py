"""Hub repo ids as the Hub spells them, and the operator's allow-list of them (`--lora-hub-allow`)."""

from __future__ import annotations

import re

# huggingface_hub's own rule (utils.validate_repo_id), with the owner required: `a/..` or `../x` never pass.
_REPO_ID = re.compile(r"\b[\w\-.]{1,96}\b/\b[\w\-.]{1,96}\b")


def is_repo_id(name: str) -> bool:
    """owner/name as the Hub allows it: word characters, '-' and '.', no '--' or '..', not ending in .git."""
    return bool(_REPO_ID.fullmatch(name)) and "--" not in name and ".." not in name and not name.endswith(".git")


def allow_list(text: str | None) -> tuple[str, ...] | None:
    """The items of an allow-list setting (`owner/name`, `owner/*`, `*`); None when left at auto, () for none."""
    if text is None or text.strip().lower() == "auto":
        return None
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    return () if items in ((), ("none",)) else items


def is_allow_item(item: str) -> bool:
    """A valid allow-list item: a repo id, `owner/*` or `*`."""
    return item == "*" or is_repo_id(item[:-1] + "x" if item.endswith("/*") else item)


def allowed(repo_id: str, items: tuple[str, ...]) -> bool:
    """Whether the allow-list names this repo (exactly, by its owner's `owner/*`, or by `*`)."""
    owner = repo_id.split("/", 1)[0]
    return any(item in ("*", repo_id, f"{owner}/*") for item in items)
