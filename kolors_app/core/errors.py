"""The one error a bad input gets: the field, what is wrong with it, and what is allowed."""

from __future__ import annotations

from typing import Any

# What an error's `code` may be; entrances render an error from its code and `allowed` as they like.
CODES = ("required", "unknown_field", "wrong_type", "unknown_choice", "out_of_range", "too_long", "too_many",
         "not_unique", "invalid")


class ValidationError(ValueError):
    """A request field is wrong; `str()` is "field: message", naming the field and what is allowed.

    `code` is one of CODES. `allowed` is the allowed values (a list), the range ({"min", "max"} and maybe
    "min_exclusive", "whole", "multiple_of"), a size ({"max_length"} or {"max_items"}), or None.
    """

    def __init__(self, field_name: str, message: str, code: str = "invalid", allowed: Any = None):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.code = code
        self.allowed = allowed

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON values: field, code, message, allowed."""
        return {"field": self.field, "code": self.code, "message": self.message, "allowed": self.allowed}

    def renamed(self, field_name: str) -> ValidationError:
        """The same error naming another field (how another entrance spells it)."""
        return ValidationError(field_name, self.message, self.code, self.allowed)

    def __reduce__(self):
        # Subclasses take other arguments; rebuilding from the attributes lets any of them cross processes.
        return _rebuild, (type(self), self.field, self.message, self.code, self.allowed)


def _rebuild(cls: type, field_name: str, message: str, code: str, allowed: Any) -> ValidationError:
    error = ValidationError.__new__(cls)
    ValidationError.__init__(error, field_name, message, code, allowed)
    return error
