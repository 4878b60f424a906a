"""User names and passwords from settings: `user:password` one per flag, one per line in a variable or a file.

A password is taken as typed, commas and colons included: only the first colon separates it from the user name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# What an old comma-separated list of users looks like inside one password (",bob:").
OLD_LIST = re.compile(r",[^,:\s]+:")


@dataclass(frozen=True)
class Login:
    """One user and its password (never shown in a repr or a log)."""

    user: str
    password: str = field(repr=False)

    def as_pair(self) -> tuple[str, str]:
        return self.user, self.password


def parse_login(text: str) -> Login:
    """`user:password` -> Login; the password is everything after the first colon."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("expected user:password")
    if user != user.strip():
        raise ValueError(f"the user name {user.strip()!r} has spaces around it")
    return Login(user, password)


def parse_lines(text: str) -> tuple[Login, ...]:
    """One `user:password` a line; blank lines and lines starting with # are skipped."""
    logins = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        try:
            logins.append(parse_login(line))
        except ValueError as error:
            raise ValueError(f"line {number}: {error} (one user:password a line)") from None
    return tuple(logins)


def parse_logins(raw: str | list[str]) -> tuple[Login, ...]:
    """The converter of --auth / --api-auth (a list: one credential per flag) and their variables (lines)."""
    if isinstance(raw, str):
        return parse_lines(raw)
    return tuple(parse_login(text) for text in raw)


def read_login_file(path: Path) -> tuple[Login, ...]:
    """The logins of a file, one `user:password` a line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    return parse_lines(text)


def repeated_user(logins: tuple[Login, ...]) -> str | None:
    """A user name given more than once, or None."""
    seen = set()
    for login in logins:
        if login.user in seen:
            return login.user
        seen.add(login.user)
    return None


def looks_like_an_old_list(login: Login) -> bool:
    """Whether a password looks like the old `a:1,b:2` list of users (commas no longer separate users)."""
    return bool(OLD_LIST.search(login.password))


# API keys (the OpenAI routes' Bearer keys): repeated flags, or one key a line in a variable or a file.
API_KEY_FILE_VARIABLE = "KOLORS_API_KEY_FILE"
MIN_API_KEY_CHARS = 8


def parse_api_keys(raw) -> tuple[str, ...]:
    """Keys from repeated flags (a list) or a variable's text (one key a line)."""
    if isinstance(raw, str):
        return tuple(line.strip() for line in raw.splitlines() if line.strip())
    return tuple(raw)


def api_key_file_source(environ, sources: dict) -> dict:
    """{"api_key": (variable, text)} when KOLORS_API_KEY_FILE names a file; ValueError naming what is wrong."""
    if not environ.get(API_KEY_FILE_VARIABLE):
        return {}
    if "api_key" in sources:
        raise ValueError(f"{API_KEY_FILE_VARIABLE}: give the keys one way, not also with {sources['api_key'][0]}")
    try:
        return {"api_key": (API_KEY_FILE_VARIABLE, Path(environ[API_KEY_FILE_VARIABLE]).read_text("utf-8"))}
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{API_KEY_FILE_VARIABLE}: cannot read it ({type(error).__name__})") from None


def api_key_problem(keys: tuple[str, ...]) -> str | None:
    """What is wrong with the keys, or None."""
    for key in keys:
        if len(key) < MIN_API_KEY_CHARS or any(character.isspace() for character in key):
            return (f"each key needs at least {MIN_API_KEY_CHARS} characters and no spaces "
                    f"(got one of {len(key)} characters)")
    return "a key is given twice" if len(set(keys)) < len(keys) else None
