"""Settings of the app and where their values come from: defaults, `KOLORS_*` variables, flags (flags win)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from kolors_app.core.hub_names import allow_list, is_allow_item
from kolors_app.core.logins import (Login, api_key_file_source, api_key_problem, parse_api_keys, parse_logins,
                                    read_login_file, repeated_user)

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
    max_metadata_bytes: int = 4 * 1024 * 1024
    max_frames: int = 100
    max_jpeg_scans: int = 100


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
    auth: tuple[Login, ...] = ()
    auth_file: Path | None = None
    queue_size: int = 32
    outputs_dir: Path = Path("outputs")
    save_outputs: bool | None = None
    preload: bool = False
    # --- API for other programs (kolors_app/a1111/, MCP) ---
    api: bool = False
    api_auth: tuple[Login, ...] = ()
    api_auth_file: Path | None = None
    api_key: tuple[str, ...] = field(default=(), repr=False)  # secrets: kept out of logs and tracebacks
    mcp: bool = False
    # --- speed options (caches, GPU options; what each buys: bench/README.md) ---
    embedding_cache_mb: int = 256
    embedding_cache_dir: Path | None = None
    attention: str = "sdpa"
    channels_last: bool = False
    fuse_qkv: bool = False
    compile: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    # --- end speed options ---
    # --- quotas for a shared server (None = auto: the local or public default, see kolors_app/serving/quotas.py) ---
    max_work: float | None = None
    max_output_mp: float | None = None
    queue_per_session: int | None = None
    queue_per_address: int | None = None
    sessions: int | None = None
    max_request_mb: int | None = None
    upload_quota_mb: int | None = None
    upload_cache_mb: int | None = None
    outputs_free_mb: int | None = None
    unqueued_per_address: int | None = None
    login_free_attempts: int | None = None
    get_rate: int | None = None
    behind_proxy: bool | None = None
    allowed_hosts: str | None = None
    # --- end quotas ---
    # --- creative tools (kolors_app/creative/part.py) ---
    lora_dir: Path = Path("models/lora")
    upscaler_dir: Path = Path("models/upscalers")
    styles_file: Path | None = None
    lora_hub_allow: str | None = None  # None = auto: any Hub repo locally, none on a public app
    lora_max_mb: int = 1024
    # --- end creative tools ---
    limits: Limits = field(default_factory=Limits)

    def saving_enabled(self) -> bool:
        """Save images server-side only for a local user unless told otherwise."""
        if self.save_outputs is not None:
            return self.save_outputs
        return not (self.share or on_spaces())


def on_spaces(environ=None) -> bool:
    """Whether the app runs on a Hugging Face Space."""
    return bool((os.environ if environ is None else environ).get("SPACE_ID"))


class SettingsError(SystemExit):
    """A setting has a bad value; the message names the flag or variable and what is allowed."""


_FIELD_HELP = {
    "model": "Hub repo id, local directory, or 'tiny' (offline random-weight model for tests)",
    "ip_adapter": "Hub repo id or local directory of the Kolors IP-Adapter Plus",
    "ip_adapter_revision": "revision of the IP-Adapter repo",
    "device": "where the model runs; auto = CUDA, else Apple MPS, else CPU",
    "dtype": "auto = float16 on a GPU, float32 on the CPU",
    "offload": "memory plan: auto = chosen from free GPU memory (see kolors_app/models/memory.py); "
               "model / sequential = diffusers CPU offload",
    "text_encoder": "ChatGLM3 text encoder: auto = chosen with the plan; gpu = fp16 on the GPU; "
                    "8bit / 4bit = bitsandbytes on CUDA; cpu = on the CPU",
    "host": "address to listen on (default 127.0.0.1; 0.0.0.0 on Spaces or from GRADIO_SERVER_NAME)",
    "port": "port to listen on (default 7860, or GRADIO_SERVER_PORT)",
    "share": "create a public Gradio share link",
    "auth": ("user:password required to open the page, MCP and the API schema; repeat the flag for several users "
             "(the variable: one user:password a line). The password is everything after the first colon"),
    "auth_file": "a file of more --auth users, one user:password a line (# starts a comment line)",
    "queue_size": "most requests waiting in the queue",
    "outputs_dir": "folder for saved images",
    "save_outputs": "save images server-side (default: on locally, off on Spaces and share links)",
    "preload": "load the model in the background at start",
}
_CHOICES = {"device": DEVICES, "dtype": DTYPES, "offload": OFFLOAD_MODES, "text_encoder": TEXT_ENCODER_MODES}
_LIMIT_FIELDS = {f.name: f.type for f in dataclasses.fields(Limits)}
_LIMIT_HELP = {
    "min_size": "smallest width/height in pixels (a multiple of 8)",
    "max_size": "largest width/height in pixels (a multiple of 8)",
    "max_steps": "most inference steps per request",
    "max_guidance": "largest guidance scale",
    "max_images": "most images per request (batch size)",
    "max_prompt_chars": "longest prompt in characters",
    "max_prompt_tokens": "text encoder tokens read from a prompt (longer prompts get a warning)",
    "max_image_pixels": "largest uploaded image in pixels",
    "max_upload_bytes": "largest upload in bytes",
    "max_metadata_bytes": ("most bytes of EXIF, ICC and compressed text an uploaded image may carry "
                           "(tag copies counted)"),
    "max_frames": "most pages or frames an uploaded TIFF or WebP may have",
    "max_jpeg_scans": "most scans an uploaded JPEG may have (each one decodes the whole image again)",
}


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

_FIELD_HELP.update({
    "api": "serve the REST APIs: the app's own POST /kolors/v1/generate, AUTOMATIC1111's under /sdapi/v1/ and OpenAI's "
           "images API under /v1/ (on share links and Spaces only with --api-auth, or --api-key for /v1/ alone)",
    "api_auth": ("user:password required by the REST APIs (/kolors/v1/, /sdapi/v1/), instead of --auth's users; "
                 "repeat the flag for several (the variable: one a line)"),
    "api_auth_file": "a file of more --api-auth users, one user:password a line (# starts a comment line)",
    "mcp": "serve the generate actions as MCP tools at /gradio_api/mcp/",
    "api_key": ("a Bearer key the OpenAI routes (/v1/) accept; repeat the flag for several; the variable holds one key "
                "a line, or KOLORS_API_KEY_FILE names a file of them"),
})
_CONVERTERS.update({"api": _parse_bool, "mcp": _parse_bool})
# Users and passwords: repeatable flags, and a file of one user:password a line, merged into the same setting.
LOGIN_SETTINGS = ("auth", "api_auth")
_CONVERTERS.update({**{name: parse_logins for name in LOGIN_SETTINGS},
                    **{f"{name}_file": lambda text: Path(text) if text else None for name in LOGIN_SETTINGS}})
_CONVERTERS["api_key"] = parse_api_keys  # kolors_app/api/keys.py checks them

# --- speed options (caches, GPU options; what each buys: bench/README.md) ---
ATTENTION_MODES = ("sdpa", "eager")
_FIELD_HELP.update({
    "embedding_cache_mb": "memory for cached prompt and IP-Adapter image embeddings, per cache (0 = off)",
    "embedding_cache_dir": "also keep prompt embeddings in this folder (worth it when the text encoder is on the CPU)",
    "attention": f"one of {ATTENTION_MODES}; sdpa = PyTorch scaled_dot_product_attention (diffusers' default)",
    "channels_last": "U-Net and VAE in channels_last memory format",
    "fuse_qkv": "fuse the attention q/k/v projections of the U-Net and VAE into one matmul",
    "compile": "torch.compile the U-Net's repeated transformer blocks (warm-up at load, dynamic sizes)",
    "vae_slicing": "decode a batch one image at a time (less peak memory)",
    "vae_tiling": "decode large images in tiles (less peak memory, can show seams)",
})
_CHOICES["attention"] = ATTENTION_MODES
_CONVERTERS.update({"embedding_cache_mb": int, "embedding_cache_dir": lambda text: Path(text) if text else None,
                    **{name: _parse_bool for name in
                       ("channels_last", "fuse_qkv", "compile", "vae_slicing", "vae_tiling")}})
# --- end speed options ---
# --- creative tools ---
_FIELD_HELP.update({
    "lora_dir": "folder of LoRAs (*.safetensors files or diffusers folders), scanned at start and on refresh",
    "upscaler_dir": "folder of super-resolution models (ESRGAN family, loaded with spandrel)",
    "styles_file": "an AUTOMATIC1111 styles.csv added to the shipped styles",
    "lora_hub_allow": ("Hub repos a LoRA name may download from, comma-separated (`owner/name`, `owner/*`, `*` for "
                       "any, `none`) (auto: any locally, none on a share link or a Space)"),
    "lora_max_mb": "largest LoRA file downloaded from the Hub in MB, its size read from the Hub before the download",
})
_CONVERTERS.update({"lora_dir": Path, "upscaler_dir": Path, "styles_file": lambda text: Path(text) if text else None,
                    "lora_hub_allow": lambda text: None if str(text).strip().lower() == "auto" else str(text).strip(),
                    "lora_max_mb": int})
# --- end creative tools ---

# --- quotas for a shared server ---
QUOTA_HELP = {
    "max_work": ("most megapixel-steps of one job: size x images x steps of every iteration, hires pass, plot cells "
                 "and upscales included (auto: 2600 locally, 300 public)"),
    "max_output_mp": "most megapixels of images one job hands back (auto: 64 locally, 16 public)",
    "queue_per_session": "jobs one browser session may have waiting or running (auto: 4 locally, 1 public)",
    "queue_per_address": ("jobs one client address may have waiting or running, 0 = no limit "
                          "(auto: 0 locally, 1 public)"),
    "sessions": ("browser sessions whose state the server keeps in memory, oldest dropped "
                 "(auto: 1000 locally, 200 public)"),
    "max_request_mb": "largest request body in MB, uploads aside (auto: 4)",
    "upload_quota_mb": "MB one client address may upload per hour (auto: 2000 locally, 200 public)",
    "upload_cache_mb": ("MB of uploads and results kept in gradio's cache folder, oldest removed "
                        "(auto: 4096 locally, 2048 public)"),
    "outputs_free_mb": "free disk in MB kept on the outputs folder's disk; below it images are not saved (auto: 1024)",
    "unqueued_per_address": "unqueued page events running at once per client address (auto: 8 locally, 4 public)",
    "login_free_attempts": ("wrong passwords (the page's login, HTTP Basic on the REST routes and MCP) per client "
                            "address and per user before the back-off (1 s, doubling to 5 min; 429) (auto: 5)"),
    "get_rate": ("GET requests per second per client address after a burst of 30 seconds' worth, 0 = no limit "
                 "(auto: 0 locally, 20 public)"),
    "behind_proxy": "take the client address from X-Forwarded-For (auto: on for share links and Spaces)",
    "allowed_hosts": ("comma-separated Host names answered "
                      "(auto: localhost names for a loopback app, any behind a proxy or public)"),
}
_FIELD_HELP.update(QUOTA_HELP)


def _optional(convert):
    return lambda text: None if str(text).strip().lower() in ("", "auto") else convert(text)


_CONVERTERS.update({name: _optional(float if name in ("max_work", "max_output_mp") else int) for name in QUOTA_HELP
                    if name not in ("behind_proxy", "allowed_hosts")})
_CONVERTERS["behind_proxy"] = _parse_optional_bool
_CONVERTERS["allowed_hosts"] = _optional(str)
AUTO_SETTINGS = {"save_outputs", "lora_hub_allow", *QUOTA_HELP}
# --- end quotas ---


def _is_bool(name: str) -> bool:
    return _CONVERTERS.get(name) in (_parse_bool, _parse_optional_bool)


def _setting_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings) if f.name != "limits"]


def _default(name: str):
    return getattr(Limits(), name) if name in _LIMIT_FIELDS else getattr(Settings(), name)


def _help(name: str) -> str:
    return _LIMIT_HELP[name] if name in _LIMIT_FIELDS else _FIELD_HELP[name]


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags: one per setting, plus `--check`."""
    parser = argparse.ArgumentParser(
        prog="app.py", description="Kolors Studio: a web UI for the Kolors text-to-image model.",
        epilog="Every flag can also be set with its KOLORS_* environment variable; flags win over variables, "
               "variables over defaults. Booleans take true/false (a bare flag means true).")
    for name in _setting_names() + list(_LIMIT_FIELDS):
        flag = "--" + name.replace("_", "-")
        extra = {"nargs": "?", "const": "true", "metavar": "BOOL"} if _is_bool(name) else {}
        if name == "api_key":
            extra = {"action": "append", "metavar": "KEY"}
        elif name in LOGIN_SETTINGS:
            extra = {"action": "append", "metavar": "USER:PASSWORD"}
        default = _default(name)
        shown = "auto" if default is None and name in AUTO_SETTINGS else "none" if default == () else default
        parser.add_argument(flag, dest=name, default=None, choices=_CHOICES.get(name), **extra,
                            help=f"{_help(name)} (default: {shown}; env KOLORS_{name.upper()})")
    parser.add_argument("--check", action="store_true",
                        help="check versions, device, memory plan, disk and downloads, then exit (non-zero if blocked)")
    return parser


def platform_defaults(environ) -> dict[str, tuple[str, str]]:
    """Defaults that depend on where the app runs (Spaces, Gradio's server variables): {name: (source, value)}."""
    values = {}
    if on_spaces(environ):
        values["host"] = ("SPACE_ID", "0.0.0.0")
    for name, variable in (("host", "GRADIO_SERVER_NAME"), ("port", "GRADIO_SERVER_PORT")):
        if environ.get(variable):
            values[name] = (variable, environ[variable])
    return values


def load_settings(argv: list[str] | None = None, environ: dict | None = None) -> tuple[Settings, argparse.Namespace]:
    """Build the settings: defaults, then `KOLORS_*` variables, then flags (flags win)."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv if argv is not None else [])
    values, limits = {}, {}
    sources = platform_defaults(environ)
    for name in _setting_names() + list(_LIMIT_FIELDS):
        if getattr(args, name, None) is not None:
            sources[name] = ("--" + name.replace("_", "-"), getattr(args, name))
        elif environ.get(f"KOLORS_{name.upper()}") is not None:
            sources[name] = (f"KOLORS_{name.upper()}", environ[f"KOLORS_{name.upper()}"])
    try:
        sources.update(api_key_file_source(environ, sources))
    except ValueError as error:
        raise SettingsError(str(error)) from None
    for name, (source, raw) in sources.items():
        if name in _CHOICES and raw not in _CHOICES[name]:
            raise SettingsError(f"{source}: {raw!r} is not one of {', '.join(_CHOICES[name])}")
        converter = _CONVERTERS.get(name, str)
        try:
            converted = converter(raw)
        except ValueError as error:
            message = f"expected a number, got {raw!r}" if converter in (int, float) else str(error)
            raise SettingsError(f"{source}: {message}") from None
        (limits if name in _LIMIT_FIELDS else values)[name] = converted
    for name in LOGIN_SETTINGS:  # a file's users join those of the flags (or of the variable)
        if values.get(f"{name}_file") is not None:
            try:
                values[name] = values.get(name, ()) + read_login_file(values[f"{name}_file"])
            except ValueError as error:
                raise SettingsError(f"{sources[f'{name}_file'][0]}: {error}") from None
    settings = Settings(**values, limits=Limits(**limits))
    check(settings, {name: source for name, (source, _raw) in sources.items()})
    return settings, args


def check(settings: Settings, sources: dict | None = None) -> None:
    """Refuse settings that can't work, naming where the bad value came from."""
    sources = sources or {}

    def refuse(name: str, message: str):
        raise SettingsError(f"{sources.get(name, name)}: {message}")

    limits = settings.limits
    if not 1 <= settings.port <= 65535:
        refuse("port", f"must be from 1 to 65535, got {settings.port}")
    if settings.queue_size < 1:
        refuse("queue_size", f"must be at least 1, got {settings.queue_size}")
    for name in LOGIN_SETTINGS:
        repeated = repeated_user(getattr(settings, name))
        if repeated is not None:
            where = " and ".join(sources[key] for key in (name, f"{name}_file") if key in sources) or name
            raise SettingsError(f"{where}: the user {repeated!r} is given more than once")
    if settings.api and not (settings.api_auth or settings.api_key) and (settings.share or on_spaces()):
        refuse("api", "on a share link or a Space the REST APIs need --api-auth user:password (or --api-key, which "
                      "opens only the OpenAI routes under /v1/)")
    if api_key_problem(settings.api_key):
        refuse("api_key", api_key_problem(settings.api_key))

    for name in ("min_size", "max_size"):
        value = getattr(limits, name)
        if value < 64 or value % 8:
            refuse(name, f"must be a multiple of 8 of at least 64, got {value}")
    if limits.min_size > limits.max_size:
        refuse("min_size", f"is above max_size ({limits.min_size} > {limits.max_size})")
    for name in ("max_steps", "max_images", "max_prompt_chars", "max_prompt_tokens", "max_image_pixels",
                 "max_upload_bytes", "max_metadata_bytes", "max_frames", "max_jpeg_scans"):
        if getattr(limits, name) < 1:
            refuse(name, f"must be at least 1, got {getattr(limits, name)}")
    for name in QUOTA_HELP:
        value = getattr(settings, name)
        lowest = 1 if name in ("sessions", "queue_per_session", "max_request_mb", "unqueued_per_address") else 0
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < lowest:
            refuse(name, f"must be at least {lowest}, got {value}")
    if not limits.max_guidance > 0:
        refuse("max_guidance", f"must be above 0, got {limits.max_guidance}")
    if settings.lora_max_mb < 1:
        refuse("lora_max_mb", f"must be at least 1, got {settings.lora_max_mb}")
    bad = [item for item in allow_list(settings.lora_hub_allow) or () if not is_allow_item(item)]
    if bad:
        refuse("lora_hub_allow", f"{bad[0]!r} is not a Hub repo id (owner/name), owner/*, * or none")
