"""Build every tiny random-weight repo once into a cached folder, and hand it to the app or to a Hub cache."""

import hashlib
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from kolors_app.hub.sources import WeightSources
from kolors_app.testing.hub_cache import install_repo
from kolors_app.testing.tiny_presets import (ADDON_REPOS, CORPUS_PATH, IP_ADAPTER_REPO, IP_ADAPTER_REVISION,
                                             KOLORS_REPO, preset_of, unet_config)

# The builders' code decides the bytes of a build.
BUILDERS = ("tiny_presets.py", "tiny_kolors.py", "tiny_ip_adapter.py", "tiny_addons.py")


def _build_version() -> str:
    """Changes with the builders, the corpus and the libraries that write the files, so no stale build is reused."""
    digest = hashlib.sha256()
    for path in [Path(__file__).with_name(name) for name in BUILDERS] + [CORPUS_PATH]:
        digest.update(path.read_bytes())
    digest.update(" ".join(metadata.version(name) for name in ("diffusers", "transformers", "torch")).encode())
    return digest.hexdigest()[:12]


def _build(folder: Path, size: str) -> None:
    # Imported here: the builders import diffusers and transformers (3 s), which a start that finds a build skips.
    from kolors_app.testing.tiny_addons import build_addon_repos
    from kolors_app.testing.tiny_ip_adapter import build_ip_adapter_repo
    from kolors_app.testing.tiny_kolors import build_kolors_repo

    build_kolors_repo(folder / KOLORS_REPO, size)
    build_ip_adapter_repo(folder / IP_ADAPTER_REPO, size)
    build_addon_repos(folder, unet_config(preset_of(size)), KOLORS_REPO)


def tiny_model_dir(size: str = "tiny") -> Path:
    """Build every tiny repo once and return the folder that holds them under their repo ids."""
    preset_of(size)
    root = Path(os.environ.get("KOLORS_TINY_DIR") or Path.home() / ".cache" / "kolors-studio" / "tiny")
    target = root / f"{size}-{_build_version()}"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{size}-", dir=root))
    try:
        _build(staging, size)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same build first; its files are identical.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def tiny_sources(size: str = "tiny") -> WeightSources:
    """Where the app loads `--model tiny` from: the model, IP-Adapter and add-ons of the tiny build."""
    return WeightSources.in_folder(tiny_model_dir(size), KOLORS_REPO, IP_ADAPTER_REPO, ADDON_REPOS)


def install_into_hf_cache(cache_dir, size: str = "tiny") -> dict:
    """Install every tiny repo (model, IP-Adapter, Control add-ons) into a Hugging Face hub cache.

    Returns {repo_id: snapshot folder}.
    """
    source, cache_dir = tiny_model_dir(size), Path(cache_dir)
    refs = {KOLORS_REPO: ["main"], IP_ADAPTER_REPO: ["main", IP_ADAPTER_REVISION], **{r: ["main"] for r in ADDON_REPOS}}
    return {repo: install_repo(cache_dir, repo, source / repo, repo_refs) for repo, repo_refs in refs.items()}
