import pytest

# --- Tiny offline Kolors models (kolors_app.tiny): built once per test session ---


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The tiny model folder: both tiny repos under their repo ids (see kolors_app.tiny.tiny_model_dir)."""
    from kolors_app.tiny import tiny_model_dir

    with pytest.MonkeyPatch.context() as patch:
        # Kept for the whole session, so code under test that calls tiny_model_dir() reuses this build.
        patch.setenv("KOLORS_TINY_DIR", str(tmp_path_factory.mktemp("kolors-tiny")))
        yield tiny_model_dir()


@pytest.fixture(scope="session")
def hf_cache(tiny_dir, tmp_path_factory):
    """A Hugging Face hub cache holding the tiny Kolors repos, with the hub offline for the session."""
    import diffusers.loaders.lora_base
    import diffusers.models.attention_dispatch
    import diffusers.utils.hub_utils
    import huggingface_hub.constants

    from kolors_app.tiny import install_into_hf_cache

    cache = tmp_path_factory.mktemp("hf-hub")
    install_into_hf_cache(cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HUB_CACHE", str(cache))
        # huggingface_hub and diffusers read these at import time, before any fixture runs.
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        for module in (diffusers.loaders.lora_base, diffusers.models.attention_dispatch, diffusers.utils.hub_utils):
            patch.setattr(module, "HF_HUB_OFFLINE", True)
        yield cache


# --- The app's core on the tiny model ---


@pytest.fixture(scope="session")
def settings(hf_cache, tmp_path_factory):
    """Default settings (the real Hub repo ids, resolved from the tiny offline cache) on the CPU."""
    from kolors_app.config import Settings

    return Settings(device="cpu", outputs_dir=tmp_path_factory.mktemp("outputs"), save_outputs=False)


@pytest.fixture(scope="session")
def manager(settings):
    """One loaded pipeline manager shared by the session (loading is the slow part)."""
    from kolors_app.pipelines import PipelineManager

    manager = PipelineManager(settings)
    manager.load()
    return manager
