"""Downloads: the fp16 file selection, the cache check, progress in the status, and the one offline/disk message."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants
import pytest

from kolors_app.hub import downloads
from kolors_app.hub.downloads import ModelUnavailable, select_files
from kolors_app.models.pipeline_manager import PipelineManager
from kolors_app.testing.tiny_presets import KOLORS_REPO

REPO, IP_REPO = "Kwai-Kolors/Kolors-diffusers", "Kwai-Kolors/Kolors-IP-Adapter-Plus"
HUB_LISTING = [
    "model_index.json", "README.md", ".gitattributes", "imgs/logo.png", "Kolors.safetensors",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json", "text_encoder/tokenization_chatglm.py",
    "text_encoder/pytorch_model-00001-of-00007.bin", "text_encoder/pytorch_model.bin.index.json",
    "text_encoder/model.fp16-00001-of-00002.safetensors", "text_encoder/model.fp16-00002-of-00002.safetensors",
    "text_encoder/model.safetensors.index.fp16.json",
    "tokenizer/tokenizer.model", "tokenizer/tokenizer_config.json", "tokenizer/vocab.txt",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.fp16.bin",
    "vae/config.json", "vae/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.safetensors",
]


def test_fp16_selection_takes_one_set_of_weights_per_component():
    assert select_files(HUB_LISTING) == [
        "model_index.json", "scheduler/scheduler_config.json",
        "text_encoder/config.json", "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors", "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/pytorch_model.bin.index.json",
        "tokenizer/tokenizer.model", "tokenizer/tokenizer_config.json", "tokenizer/vocab.txt",
        "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    ]


def test_selection_on_the_tiny_repo_skips_the_fp32_weights(tiny_dir):
    files = [p.relative_to(tiny_dir / KOLORS_REPO).as_posix() for p in (tiny_dir / KOLORS_REPO).rglob("*")
             if p.is_file()]
    chosen = select_files(files)
    weights = [name for name in chosen if name.endswith(".safetensors")]
    assert sorted(weights) == ["text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
                               "vae/diffusion_pytorch_model.fp16.safetensors"]
    assert "tokenizer/tokenizer.model" in chosen and "model_index.json" in chosen


def test_cached_repos_are_found_offline(hf_cache):
    model = downloads.cache_state(REPO)
    assert model.complete and model.cached_bytes > 0
    assert downloads.fetch(REPO) == model.snapshot
    ip_adapter = downloads.cache_state(IP_REPO, "refs/pr/4", ip_adapter=True)
    assert ip_adapter.complete
    assert downloads.fetch(IP_REPO, "refs/pr/4", variant=None, ip_adapter=True) == ip_adapter.snapshot


@pytest.fixture
def empty_cache(tmp_path, monkeypatch, hf_cache):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_offline_without_the_weights_is_one_actionable_message(empty_cache):
    with pytest.raises(ModelUnavailable) as error:
        downloads.fetch(REPO)
    text = str(error.value)
    for part in (REPO, "is not in the Hugging Face cache", str(empty_cache), "offline mode is on (HF_HUB_OFFLINE=1)",
                 "about 17.9 GB", "GB free",
                 f'hf download {REPO} --include "*.json" "*.txt" "*.model" "*fp16*" --local-dir DIR',
                 "--model DIR", "--model tiny"):
        assert part in text


def test_an_incomplete_snapshot_names_what_is_missing(hf_cache, tmp_path, monkeypatch):
    copy = tmp_path / "hub"
    shutil.copytree(hf_cache, copy, symlinks=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(copy))
    snapshot = downloads.cache_state(REPO).snapshot
    for weights in (snapshot / "unet").glob("*.safetensors"):
        weights.resolve().unlink()
    state = downloads.cache_state(REPO)
    assert not state.complete and state.missing == ["unet/weights"]
    with pytest.raises(ModelUnavailable, match=r"is incomplete in \(missing: unet/weights\)"):
        downloads.fetch(REPO)


def fake_hub(monkeypatch, sizes: dict, on_download=None):
    """The Hub, as far as fetch sees it: reachable, a file listing, and a snapshot_download."""
    monkeypatch.setattr(downloads, "hub_reachable", lambda timeout=3.0: True)
    listing = [SimpleNamespace(path=name, size=size) for name, size in sizes.items()]
    monkeypatch.setattr(downloads, "HfApi", lambda: SimpleNamespace(list_repo_tree=lambda *a, **k: iter(listing)))
    calls = []

    def snapshot_download(repo, **kwargs):
        calls.append((repo, kwargs))
        return on_download(kwargs) if on_download else "/nowhere"

    monkeypatch.setattr(downloads, "snapshot_download", snapshot_download)
    return calls


def test_too_little_disk_is_refused_before_downloading(empty_cache, monkeypatch):
    calls = fake_hub(monkeypatch, {name: 3 * 10**9 for name in HUB_LISTING})
    monkeypatch.setattr(downloads, "free_disk_bytes", lambda path=None: 5 * 10**9)
    with pytest.raises(ModelUnavailable) as error:
        downloads.fetch(REPO)
    assert calls == []
    text = str(error.value)
    for part in ("Not enough disk space to download", REPO, "needs 42.0 GB", "5.0 GB is free", "HF_HUB_CACHE",
                 "--model"):
        assert part in text


def test_an_unreachable_hub_says_so(empty_cache, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(downloads, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelUnavailable, match="the Hugging Face Hub could not be reached"):
        downloads.fetch(REPO)


def test_progress_bar_forwards_downloaded_bytes():
    seen = []
    bar_class = downloads.progress_bar_class(lambda done, total: seen.append((done, total)))
    bar = bar_class(total=100, unit="B", disable=True, name="huggingface_hub.snapshot_download")
    bar.update(30)
    bar.update(70)
    bar_class(total=5, unit="B", disable=True, name="huggingface_hub.snapshot_download.transfer").update(5)
    bar_class(total=3, disable=True).update(1)
    assert seen == [(30, 100), (100, 100)]


def test_first_load_downloads_the_fp16_files_with_progress_in_the_status(empty_cache, monkeypatch, tiny_dir,
                                                                         settings):
    statuses = []

    def download(kwargs):
        bar = kwargs["tqdm_class"](total=2 * 10**9, unit="B", disable=True, name="huggingface_hub.snapshot_download")
        for _ in range(2):
            bar.update(10**9)
            statuses.append(manager.status)
        return str(tiny_dir / KOLORS_REPO)

    calls = fake_hub(monkeypatch, {name: 10**6 for name in HUB_LISTING}, download)
    manager = PipelineManager(settings)
    manager.load()
    assert calls[0][0] == REPO and calls[0][1]["allow_patterns"] == select_files(HUB_LISTING)
    assert statuses == [f"downloading {REPO}: 1.0 of 2.0 GB (50%)", f"downloading {REPO}: 2.0 of 2.0 GB (100%)"]
    assert manager.loaded and manager.status.startswith("plan cpu")


def test_a_failed_load_shows_the_message_in_the_status(empty_cache, settings):
    manager = PipelineManager(settings)
    with pytest.raises(ModelUnavailable):
        manager.load()
    assert manager.status.startswith("load failed: Weights not available") and not manager.loaded


def test_local_folders_are_checked_for_every_part(tiny_dir, tmp_path):
    assert downloads.missing_parts(tiny_dir / KOLORS_REPO) == []
    copy = tmp_path / "kolors"
    shutil.copytree(tiny_dir / KOLORS_REPO, copy)
    (copy / "tokenizer" / "tokenizer.model").unlink()
    for weights in (copy / "vae").glob("*.safetensors"):
        weights.unlink()
    assert downloads.missing_parts(copy) == ["tokenizer/tokenizer.model", "vae/weights"]
    assert downloads.missing_parts(tmp_path) == ["model_index.json"]


@pytest.mark.parametrize("source, expected", [
    (REPO, True), ("tiny", False), ("./models/kolors", False), ("/abs/path", False), ("a/b/c", False),
])
def test_hub_repo_ids_are_told_from_folders(source, expected):
    assert downloads.is_hub_repo(source) is expected
    assert not downloads.is_hub_repo(str(Path(__file__).parent))
