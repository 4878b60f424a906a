"""The library versions the patches are tested with, and the check that every name a patch touches is there."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

# The upper bounds of requirements.txt are these ranges (tests/test_patches.py compares them).
TESTED = {
    "gradio": ">=6.31,<7",
    "diffusers": ">=0.42.1,<0.43",
    "accelerate": ">=1.15,<2",
    "pillow": ">=12.3,<13",
}


class UnsupportedLibrary(RuntimeError):
    """An installed library lacks a name a patch needs; serving would give a half-broken page."""


@dataclass(frozen=True)
class Touched:
    """A name a patch relies on: `attribute` of `owner` ("package.module:Class"), or of `instance(owner)`.

    `instance` makes an object from the owner, for attributes set on instances. `parameters` are keyword
    arguments the attribute, a callable, must take. `extra` names a package of an optional extra: where it is not
    installed, the name is never used and is not checked. `label` names it where owner.attribute would mislead.
    """

    owner: str
    attribute: str
    instance: Callable[[object], object] | None = None
    parameters: tuple[str, ...] = ()
    extra: str = ""
    label: str = ""

    @property
    def name(self) -> str:
        called = f"({', '.join(self.parameters)})" if self.parameters else ""
        return self.label or f"{self.owner.replace(':', '.')}.{self.attribute}{called}"

    def present(self) -> bool:
        """Whether the name is there, taking the parameters; True where its extra is not installed."""
        if self.extra and importlib.util.find_spec(self.extra) is None:
            return True
        module_name, _, qualified = self.owner.partition(":")
        try:
            owner = importlib.import_module(module_name)
            for part in filter(None, qualified.split(".")):
                owner = getattr(owner, part)
            if self.instance is not None:
                owner = self.instance(owner)
            value = getattr(owner, self.attribute)
            accepted = inspect.signature(value).parameters if self.parameters else {}
        # TypeError: a constructor the probe calls, or the signature, is not the one the patch was written for.
        except (ImportError, AttributeError, TypeError, ValueError):
            return False
        return all(name in accepted for name in self.parameters)


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution; None where it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def missing_names(touched: dict[str, tuple[Touched, ...]]) -> dict[str, list[str]]:
    """The names each patch (by its name) touches that are not there; patches with none missing are left out."""
    missing = {patch: [item.name for item in names if not item.present()] for patch, names in touched.items()}
    return {patch: names for patch, names in missing.items() if names}


def missing_message(distribution: str, missing: dict[str, list[str]]) -> str:
    """What a start refused for missing names says: the library, its version, the tested range, what is missing."""
    tested = TESTED[distribution]
    needs = "; ".join(f"{patch} needs {', '.join(names)}" for patch, names in missing.items())
    return (f"{distribution} {installed_version(distribution) or '(not installed)'} lacks names Kolors Studio's "
            f"patches of it touch ({needs}). Kolors Studio is tested with {distribution}{tested}: "
            f"pip install '{distribution}{tested}'")


def range_warning(distribution: str) -> str | None:
    """A warning where the installed version is outside the tested range; None inside it or when not installed."""
    version, tested = installed_version(distribution), TESTED[distribution]
    if version is None:
        return None
    try:
        inside = SpecifierSet(tested).contains(Version(version), prereleases=True)
    except InvalidVersion:
        inside = False
    if inside:
        return None
    return (f"{distribution} {version} is outside the range Kolors Studio is tested with ({distribution}{tested}). "
            f"Every name its patches touch is there, but they may no longer do what they should: "
            f"pip install '{distribution}{tested}'")
