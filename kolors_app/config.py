"""Settings of the app and where their values come from: defaults, `KOLORS_*` variables, flags."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "Kwai-Kolors/Kolors-diffusers"
DEFAULT_IP_ADAPTER = "Kwai-Kolors/Kolors-IP-Adapter-Plus"
# The safetensors weights of the IP-Adapter exist only on this pull-request revision.
DEFAULT_IP_ADAPTER_REVISION = "refs/pr/4"

OFFLOAD_MODES = ("auto", "none", "model", "sequential")
TEXT_ENCODER_MODES = ("auto", "gpu", "8bit", "4bit", "cpu")
DTYPES = ("auto", "float16", "bfloat16", "float32")
DEVICES = ("auto", "cuda", "cpu", "mps")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; every bound is inclusive."""

    min_size: int = 256
    max_size: int = 2048
    max_steps: int = 150
    max_guidance: float = 30.0
    max_images: int = 8
    max_prompt_chars: int = 5000
    max_prompt_tokens: int = 256
    max_image_pixels: int = 16_000_000
    max_upload_bytes: int = 20 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything the app can be configured with; see the README's configuration table."""

    model: str = DEFAULT_MODEL
    ip_adapter: str = DEFAULT_IP_ADAPTER
    ip_adapter_revision: str = DEFAULT_IP_ADAPTER_REVISION
    device: str = "auto"
    dtype: str = "auto"
    offload: str = "auto"
    text_encoder: str = "auto"
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: str | None = None
    queue_size: int = 32
    outputs_dir: Path = Path("outputs")
    save_outputs: bool | None = None
    preload: bool = False
    limits: Limits = field(default_factory=Limits)

    def saving_enabled(self) -> bool:
        """Save images server-side only for a local user unless told otherwise."""
        if self.save_outputs is not None:
            return self.save_outputs
        return not (self.share or on_spaces())


def on_spaces() -> bool:
    """Whether the app runs on a Hugging Face Space."""
    return bool(os.environ.get("SPACE_ID"))


_FIELD_HELP = {
    "model": "Hub repo id, local directory, or 'tiny' (offline random-weight model for tests)",
    "ip_adapter": "Hub repo id or local directory of the Kolors IP-Adapter Plus",
    "ip_adapter_revision": "revision of the IP-Adapter repo",
    "device": f"one of {DEVICES}",
    "dtype": f"one of {DTYPES}; auto = float16 on CUDA, float32 on CPU",
    "offload": f"one of {OFFLOAD_MODES}",
    "text_encoder": f"one of {TEXT_ENCODER_MODES}",
    "host": "address to listen on",
    "port": "port to listen on",
    "share": "create a public Gradio share link",
    "auth": "user:password required to open the app",
    "queue_size": "most requests waiting in the queue",
    "outputs_dir": "folder for saved images",
    "save_outputs": "save images server-side (default: on locally, off on Spaces and share links)",
    "preload": "load the model in the background at start",
}
_CHOICES = {"device": DEVICES, "dtype": DTYPES, "offload": OFFLOAD_MODES, "text_encoder": TEXT_ENCODER_MODES}
_LIMIT_FIELDS = {f.name: f.type for f in dataclasses.fields(Limits)}


def _parse_bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _parse_optional_bool(text: str) -> bool | None:
    return None if str(text).strip().lower() == "auto" else _parse_bool(text)


_CONVERTERS = {"share": _parse_bool, "preload": _parse_bool, "save_outputs": _parse_optional_bool,
               "port": int, "queue_size": int, "outputs_dir": Path}
_CONVERTERS.update({name: {"int": int, "float": float}[kind] for name, kind in _LIMIT_FIELDS.items()})


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags: one per setting, plus `--check`."""
    parser = argparse.ArgumentParser(prog="app.py", description="Kolors Studio: a web UI for Kolors.")
    for item in dataclasses.fields(Settings):
        if item.name == "limits":
            continue
        flag = "--" + item.name.replace("_", "-")
        parser.add_argument(flag, dest=item.name, default=None, choices=_CHOICES.get(item.name),
                            help=f"{_FIELD_HELP[item.name]} (env KOLORS_{item.name.upper()})")
    for name in _LIMIT_FIELDS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                            help=f"request limit (env KOLORS_{name.upper()})")
    parser.add_argument("--check", action="store_true", help="print what would run, then exit")
    return parser


def load_settings(argv: list[str] | None = None, environ: dict | None = None) -> tuple[Settings, argparse.Namespace]:
    """Build the settings: defaults, then `KOLORS_*` variables, then flags (flags win)."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv if argv is not None else [])
    values, limits = {}, {}
    for name in [f.name for f in dataclasses.fields(Settings) if f.name != "limits"] + list(_LIMIT_FIELDS):
        raw = getattr(args, name, None)
        if raw is None:
            raw = environ.get(f"KOLORS_{name.upper()}")
        if raw is None:
            continue
        if name in _CHOICES and raw not in _CHOICES[name]:
            raise SystemExit(f"KOLORS_{name.upper()}: {raw!r} is not one of {_CHOICES[name]}")
        try:
            converted = _CONVERTERS.get(name, str)(raw)
        except ValueError as error:
            raise SystemExit(f"{name}: {error}") from None
        (limits if name in _LIMIT_FIELDS else values)[name] = converted
    return Settings(**values, limits=Limits(**limits)), args
