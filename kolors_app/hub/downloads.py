"""Fetch the weights from the Hugging Face Hub on first use, with progress; one clear error when they can't be had."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx2
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                    RepositoryNotFoundError, RevisionNotFoundError)
from huggingface_hub.utils import get_session
from huggingface_hub.utils import tqdm as hub_tqdm

from kolors_app.core.config import DEFAULT_IP_ADAPTER, DEFAULT_MODEL

GB = 10**9
IP_ADAPTER_WEIGHTS = "ip_adapter_plus_general.safetensors"
# Download sizes from KOLORS.md (fp16 text encoder 12.5 GB, U-Net 5.2 GB, VAE 0.17 GB), for when the Hub can't answer.
KNOWN_SIZES = {DEFAULT_MODEL: int(17.9 * GB), DEFAULT_IP_ADAPTER: int(2.7 * GB)}
# Room left on the disk after a download, for the temporary files the Hub client writes.
DISK_MARGIN = 1 * GB
CONFIG_SUFFIXES = (".json", ".txt", ".model")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
IP_ADAPTER_PATTERNS = ["image_encoder/*.json", "image_encoder/*.safetensors", IP_ADAPTER_WEIGHTS]
FP16_PATTERNS = ["*.json", "*.txt", "*.model", "*fp16*"]

Progress = Callable[[int, int], None]
# What reaching the Hub can fail with when the machine is offline or the Hub is down.
NETWORK_ERRORS = (OfflineModeIsEnabled, LocalEntryNotFoundError, HfHubHTTPError, httpx2.HTTPError, OSError)


class ModelUnavailable(RuntimeError):
    """The weights can't be had (offline and not cached, not found, or too little disk); the text says what to do."""


@dataclass
class CacheState:
    """What the local Hugging Face cache holds of one repo."""

    repo: str
    snapshot: Path | None
    missing: list[str]
    cached_bytes: int

    @property
    def complete(self) -> bool:
        """Whether every part needed to load is present."""
        return self.snapshot is not None and not self.missing


def _variant_pattern(variant: str) -> re.Pattern:
    # diffusers names variant files `x.fp16.safetensors`, shards `x.fp16-00001-of-00002.safetensors`
    # or `x-00001-of-00002.fp16.safetensors`.
    return re.compile(rf"\.{variant}(-\d{{5}}-of-\d{{5}})?\.|-\d{{5}}-of-\d{{5}}\.{variant}\.")


def select_files(filenames, variant: str | None = "fp16") -> list[str]:
    """The files a pipeline load needs: configs, tokenizer, and per component one set of weights.

    In each folder: the variant's weights if it has any, else the plain ones; safetensors over .bin.
    """
    pattern = _variant_pattern(variant) if variant else None
    keep, weights = [], {}
    for name in filenames:
        if name.endswith(CONFIG_SUFFIXES):
            keep.append(name)
        elif name.endswith(WEIGHT_SUFFIXES) and "/" in name:
            weights.setdefault(name.rsplit("/", 1)[0], []).append(name)
    for names in weights.values():
        variant_names = [n for n in names if pattern and pattern.search(n)]
        chosen = variant_names or [n for n in names if not (pattern and pattern.search(n))]
        safetensors = [n for n in chosen if n.endswith(".safetensors")]
        keep.extend(safetensors or chosen)
    return sorted(keep)


def has_variant(folder: Path, variant: str = "fp16") -> bool:
    """Whether a local pipeline folder has weights of this variant."""
    pattern = _variant_pattern(variant)
    return any(pattern.search(path.name) for path in Path(folder).glob("*/*") if path.name.endswith(WEIGHT_SUFFIXES))


def cache_dir() -> Path:
    """The Hugging Face hub cache in use (HF_HUB_CACHE / HF_HOME)."""
    return Path(constants.HF_HUB_CACHE)


def free_disk_bytes(path: Path | None = None) -> int:
    """Free bytes on the disk that holds the cache (or its nearest existing parent)."""
    path = Path(path or cache_dir())
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _snapshot_folder(repo: str, revision: str | None) -> Path | None:
    storage = cache_dir() / ("models--" + repo.replace("/", "--"))
    ref = storage / "refs" / (revision or "main")
    if ref.is_file():
        folder = storage / "snapshots" / ref.read_text().strip()
        return folder if folder.is_dir() else None
    if revision and (storage / "snapshots" / revision).is_dir():
        return storage / "snapshots" / revision
    return None


def missing_parts(folder: Path, ip_adapter: bool = False) -> list[str]:
    """What a local copy lacks to be loaded: per component its config, tokenizer model or weights."""
    folder = Path(folder)
    if ip_adapter:
        needed = {"image_encoder/config.json": "image_encoder/config.json",
                  "image_encoder/*.safetensors": "image_encoder weights", IP_ADAPTER_WEIGHTS: IP_ADAPTER_WEIGHTS}
        return [label for pattern, label in needed.items() if not _exists(folder, pattern)]
    if not _exists(folder, "model_index.json"):
        return ["model_index.json"]
    index = json.loads((folder / "model_index.json").read_text())
    missing = []
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        if name == "tokenizer":
            needed = ["tokenizer/tokenizer.model"]
        elif name == "scheduler":
            needed = ["scheduler/scheduler_config.json"]
        else:
            needed = [f"{name}/config.json", f"{name}/*.safetensors|{name}/*.bin"]
        missing += [item.split("|")[0].replace("*.safetensors", "weights") for item in needed
                    if not any(_exists(folder, option) for option in item.split("|"))]
    return missing


def _exists(folder: Path, pattern: str) -> bool:
    # A cache symlink whose blob is gone (interrupted download) does not count.
    return any(path.is_file() for path in folder.glob(pattern))


def cache_state(repo: str, revision: str | None = None, ip_adapter: bool = False) -> CacheState:
    """Which parts of a Hub repo are in the local cache, without touching the network."""
    folder = _snapshot_folder(repo, revision)
    if folder is None:
        return CacheState(repo, None, ["everything"], 0)
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return CacheState(repo, folder, missing_parts(folder, ip_adapter), size)


def is_hub_repo(source: str) -> bool:
    """A Hub repo id (`owner/name`) rather than a local folder."""
    return not Path(source).exists() and source.count("/") == 1 and not source.startswith((".", "/", "~"))


def progress_bar_class(on_progress: Progress):
    """A tqdm class for snapshot_download that forwards the byte count of the download to on_progress(done, total)."""

    class ForwardingTqdm(hub_tqdm):
        def __init__(self, *args, **kwargs):
            # The byte bar of snapshot_download; the Xet transfer bar and the file-count bar are not forwarded.
            self._forward = kwargs.get("unit") == "B" and not str(kwargs.get("name", "")).endswith(".transfer")
            self._done = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            # A disabled tqdm (no terminal) does not count, so the bytes are counted here.
            self._done += int(n or 0)
            if self._forward:
                on_progress(self._done, int(self.total or 0))
            return super().update(n)

    return ForwardingTqdm


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub answers now (one request, no retries); False in offline mode."""
    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except (httpx2.HTTPError, OSError):
        return False
    return True


def fetch(repo: str, revision: str | None = None, variant: str | None = "fp16", on_progress: Progress | None = None,
          ip_adapter: bool = False) -> Path:
    """The local folder of a Hub repo: the cached snapshot, downloaded first if anything is missing."""
    cached = cache_state(repo, revision, ip_adapter)
    if cached.complete:
        return cached.snapshot
    flag = "--ip-adapter" if ip_adapter else "--model"
    if not hub_reachable():
        raise ModelUnavailable(offline_message(repo, revision, cached, unreachable_reason(), flag))
    try:
        listing = {item.path: item.size for item in HfApi().list_repo_tree(repo, revision=revision, recursive=True)
                   if hasattr(item, "size")}
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as error:
        hint = "check --model / --ip-adapter, or run `hf auth login`"
        raise ModelUnavailable(f"model: {repo} (revision {revision or 'main'}) was not found or needs a token "
                               f"({type(error).__name__}); {hint}.") from None
    except NETWORK_ERRORS as error:
        raise ModelUnavailable(offline_message(repo, revision, cached, unreachable_reason(error), flag)) from None
    files = [name for name in listing if _matches(name, IP_ADAPTER_PATTERNS)] if ip_adapter \
        else select_files(listing, variant)
    have = cached.snapshot
    needed = sum(listing[name] or 0 for name in files if not (have and (have / name).is_file()))
    if needed + DISK_MARGIN > free_disk_bytes():
        raise ModelUnavailable(disk_message(repo, needed))
    try:
        folder = snapshot_download(repo, revision=revision, allow_patterns=files,
                                   tqdm_class=progress_bar_class(on_progress) if on_progress else None)
    except NETWORK_ERRORS as error:
        state = cache_state(repo, revision, ip_adapter)
        raise ModelUnavailable(offline_message(repo, revision, state, unreachable_reason(error), flag)) from None
    return Path(folder)


def _matches(name: str, patterns: list[str]) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(name, pattern) for pattern in patterns)


def download_size(repo: str) -> int:
    """The published download size of a known repo, else 0."""
    return KNOWN_SIZES.get(repo, 0)


def unreachable_reason(error: BaseException | None = None) -> str:
    """Why the Hub can't be used, in words."""
    if constants.HF_HUB_OFFLINE or isinstance(error, OfflineModeIsEnabled):
        return "offline mode is on (HF_HUB_OFFLINE=1)"
    detail = f" ({type(error).__name__})" if error is not None else ""
    return f"the Hugging Face Hub could not be reached{detail}"


def offline_message(repo: str, revision: str | None, cached: CacheState, reason: str, flag: str = "--model") -> str:
    """What is missing, how much space it takes, and the ways out."""
    what = "is not in" if cached.snapshot is None else f"is incomplete in (missing: {', '.join(cached.missing)})"
    size = download_size(repo)
    space = f"about {size / GB:.1f} GB" if size else "its full size"
    revision_flag = f" --revision {revision}" if revision else ""
    # Only what the app loads: the fp16 weights, or the IP-Adapter's safetensors.
    include = " ".join(f'"{p}"' for p in (IP_ADAPTER_PATTERNS if flag == "--ip-adapter" else FP16_PATTERNS))
    return (f"Weights not available: {repo} {what} the Hugging Face cache ({cache_dir()}) and {reason}. "
            f"It needs {space} of disk ({free_disk_bytes() / GB:.1f} GB free). Either go online and start again; "
            f"or on another machine run `hf download {repo}{revision_flag} --include {include} --local-dir DIR`, "
            f"copy DIR here and start with {flag} DIR; or try the app offline with --model tiny "
            "(a tiny random-weight model).")


def disk_message(repo: str, needed: int) -> str:
    """Too little room for the download: how much, where, and what to do."""
    return (f"Not enough disk space to download {repo}: it needs {needed / GB:.1f} GB plus {DISK_MARGIN / GB:.0f} GB "
            f"of room, and {free_disk_bytes() / GB:.1f} GB is free in {cache_dir()}. Free some space, point "
            f"HF_HUB_CACHE at a larger disk, or point --model at a local copy.")


def fetch_files(repo: str, patterns: list[str], revision: str | None = None,
                on_progress: Progress | None = None) -> Path:
    """The local folder of an add-on repo holding the files matching patterns, downloaded first when missing."""
    folder = _snapshot_folder(repo, revision)
    if folder is not None and all(_exists(folder, pattern) for pattern in patterns):
        return folder
    if not hub_reachable():
        raise ModelUnavailable(f"{repo} is needed and not in the cache ({unreachable_reason()}); download it "
                               f"where the Hub is reachable: hf download {repo} {' '.join(patterns)}")
    try:
        downloaded = snapshot_download(repo, revision=revision, allow_patterns=patterns,
                                       tqdm_class=progress_bar_class(on_progress) if on_progress else None)
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError, *NETWORK_ERRORS) as error:
        reason = f"{type(error).__name__}: {unreachable_reason(error)}"
        raise ModelUnavailable(f"{repo} could not be downloaded ({reason})") from None
    return Path(downloaded)
