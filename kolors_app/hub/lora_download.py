"""One LoRA file from a Hub repo: its size read from the Hub's metadata first and refused above the limit.

Called before a job waits for the GPU slot (kolors_app/engine/worker.py fetch_parts), never inside it.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                    OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

from kolors_app.core.errors import ValidationError
from kolors_app.hub.downloads import DISK_MARGIN, free_disk_bytes, unreachable_reason

MB = 2**20
# What asking the Hub for one file can fail with; each gets a message without a local path.
HUB_ERRORS = (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError, OfflineModeIsEnabled,
              HfHubHTTPError, httpx2.HTTPError, OSError)


def download_lora(repo_id: str, filename: str, max_bytes: int, field_name: str = "loras") -> Path:
    """The local copy of repo_id's filename: its size checked from the Hub's HEAD metadata, then downloaded.

    Offline, a copy already in the Hugging Face cache is used (its size checked on disk).
    """
    def refusal(message: str, code: str = "invalid", allowed=None) -> ValidationError:
        return ValidationError(field_name, f"Hub LoRA {repo_id!r} {message}", code, allowed)

    try:
        info = hf_hub_download(repo_id, filename, dry_run=True)  # one HEAD request (or the cache, offline)
    except HUB_ERRORS as error:
        raise refusal(_failure(error, filename)) from None
    limit = f"at most {max_bytes / MB:,.0f} MB"
    if info.file_size is None:
        raise refusal(f"cannot be used: the Hub did not say the size of its {filename} ({limit})")
    if info.file_size > max_bytes:
        raise refusal(f"is {info.file_size / MB:,.0f} MB; {limit}", "out_of_range", {"max_bytes": max_bytes})
    if info.will_download and info.file_size + DISK_MARGIN > free_disk_bytes():
        raise refusal(f"needs {info.file_size / MB:,.0f} MB and the server's disk is too full")
    try:
        path = Path(hf_hub_download(repo_id, filename))
    except HUB_ERRORS as error:
        raise refusal(_failure(error, filename)) from None
    if path.stat().st_size > max_bytes:  # the Hub said less than it sent
        raise refusal(f"is {path.stat().st_size / MB:,.0f} MB; {limit}", "out_of_range", {"max_bytes": max_bytes})
    return path


def _failure(error: BaseException, filename: str) -> str:
    """Why the file cannot be had, in words a stranger may read (no cache folder, no URL)."""
    if isinstance(error, (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError)):
        return "was not found on the Hub (or it is private or gated)"
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return f"is not downloaded on this server and {unreachable_reason(error)}"
    if isinstance(error, EntryNotFoundError):
        return f"has no {filename} (a Kolors LoRA in diffusers layout)"
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        return f"could not be fetched: the Hub answered HTTP {error.response.status_code}"
    return f"could not be fetched: {unreachable_reason(error)}"
