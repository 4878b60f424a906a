"""Install a repo folder into a Hugging Face hub cache the way a download leaves it, so that loading works offline."""

import contextlib
import hashlib
import json
import os
from pathlib import Path

# Files the Hub stores in Git LFS; the cache names their blobs by sha256 instead of git sha1.
LFS_SUFFIXES = (".safetensors", ".bin", ".model")


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    staging.write_bytes(data)
    os.replace(staging, path)


def install_repo(cache_dir: Path, repo_id: str, source: Path, refs: list) -> Path:
    """Copy one repo folder into the cache: blobs named by etag, snapshot symlinks, tree listing, refs."""
    storage = cache_dir / ("models--" + repo_id.replace("/", "--"))
    entries, etags = {}, {}
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data, name = file.read_bytes(), file.relative_to(source).as_posix()
        entries[name] = {"size": len(data), "blob_id": _git_blob_sha1(data)}
        etags[name] = entries[name]["blob_id"]
        if file.name.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
            entries[name] = {
                "size": len(data),
                "blob_id": _git_blob_sha1(pointer.encode()),
                "lfs_sha256": sha256,
                "lfs_size": len(data),
            }
            etags[name] = sha256
        if not (storage / "blobs" / etags[name]).is_file():
            _write_atomic(storage / "blobs" / etags[name], data)
    # A hash of the listing stands in for the commit id: same files, same snapshot.
    commit = hashlib.sha1(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    snapshot = storage / "snapshots" / commit
    for name, etag in etags.items():
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # installed before: blobs are content-addressed
            link.symlink_to(os.path.relpath(storage / "blobs" / etag, link.parent))
    # huggingface_hub 2.x reads trees/<commit>.json to tell offline whether a snapshot is complete.
    _write_atomic(storage / "trees" / f"{commit}.json", json.dumps({"format_version": 1, "files": entries}).encode())
    for ref in refs:
        # huggingface_hub keeps a revision under refs/ by its full name: "refs/pr/4" is refs/refs/pr/4.
        _write_atomic(storage / "refs" / ref, commit.encode())
    return snapshot
