"""Build tiny random-weight copies of the Kolors Hub repos offline, in their real file layout."""

import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import diffusers
import sentencepiece
import torch
import transformers
from diffusers import AutoencoderKL, EulerDiscreteScheduler, KolorsPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import IPAdapterPlusImageProjection
from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig, ChatGLMModel, RMSNorm
from diffusers.pipelines.kolors.tokenizer import ChatGLMTokenizer
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

KOLORS_REPO = "Kwai-Kolors/Kolors-diffusers"
IP_ADAPTER_REPO = "Kwai-Kolors/Kolors-IP-Adapter-Plus"
IP_ADAPTER_REVISION = "refs/pr/4"
IP_ADAPTER_WEIGHT_NAME = "ip_adapter_plus_general.safetensors"
SEED = 0
CORPUS_PATH = Path(__file__).resolve().parents[2] / "assets" / "tiny_tokenizer_corpus.txt"

# The published Kolors scheduler settings; its 1100-step training schedule must survive into every scheduler.
SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.014,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1100,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

TOKENIZER_CONFIG = {
    "tokenizer_class": "ChatGLMTokenizer",
    "padding_side": "left",
    "clean_up_tokenization_spaces": False,
    "encode_special_tokens": False,
    "remove_space": False,
    "do_lower_case": False,
}

TINY = {
    "tokenizer_vocab_size": 1000,
    "text_encoder": {
        "num_layers": 2, "hidden_size": 32, "ffn_hidden_size": 64, "kv_channels": 8, "num_attention_heads": 4,
    },
    "unet": {
        "block_out_channels": (32, 64, 64),
        "attention_head_dim": (1, 2, 2),
        "transformer_layers_per_block": (1, 1, 2),
        "layers_per_block": 1,
        "cross_attention_dim": 32,
        "addition_time_embed_dim": 8,
        "norm_num_groups": 8,
    },
    "vae": {"block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 4},
    "image_encoder": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": 32,
        "image_size": 56,
        "patch_size": 14,
    },
    "image_proj": {"hidden_dims": 64, "num_queries": 16},
}

# tiny: fastest, for tests. text-heavy / unet-heavy: that component dominates run time, for benchmarks.
SIZES = {
    "tiny": TINY,
    "text-heavy": {
        **TINY,
        "text_encoder": {
            "num_layers": 8, "hidden_size": 512, "ffn_hidden_size": 1536, "kv_channels": 64, "num_attention_heads": 8,
        },
    },
    "unet-heavy": {
        **TINY,
        "unet": {
            "block_out_channels": (128, 256, 256),
            "attention_head_dim": (2, 4, 4),
            "transformer_layers_per_block": (1, 2, 4),
            "layers_per_block": 2,
            "cross_attention_dim": 256,
            "addition_time_embed_dim": 32,
            "norm_num_groups": 32,
        },
    },
}

# Files the Hub stores in Git LFS; the cache names their blobs by sha256 instead of git sha1.
LFS_SUFFIXES = (".safetensors", ".bin", ".model")


def _preset(size: str) -> dict:
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    return SIZES[size]


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's CPU RNG inside the block, leaving the caller's RNG state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _write_tokenizer(path: Path, vocab_size: int) -> ChatGLMTokenizer:
    """Train a sentencepiece model on the bundled corpus and write the ChatGLM tokenizer folder."""
    model = io.BytesIO()
    # byte_fallback lets any text (emoji, rare CJK) tokenize; one thread keeps the model byte-identical.
    sentencepiece.SentencePieceTrainer.train(
        input=str(CORPUS_PATH),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.model").write_bytes(model.getvalue())
    (path / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    return ChatGLMTokenizer.from_pretrained(path)


def _text_encoder(preset: dict, vocab_size: int) -> ChatGLMModel:
    """A ChatGLM3-style encoder: original rope, 2-group multi-query attention, qkv bias, RMSNorm."""
    config = ChatGLMConfig(
        **preset["text_encoder"],
        padded_vocab_size=-(-vocab_size // 64) * 64,
        seq_length=256,
        original_rope=True,
        multi_query_attention=True,
        multi_query_group_num=2,
        add_qkv_bias=True,
        rmsnorm=True,
        architectures=["ChatGLMModel"],
    )
    # The default empty_init=True leaves every weight as uninitialised memory.
    with _seeded(SEED):
        model = ChatGLMModel(config, empty_init=False)
    # RMSNorm weights come from torch.empty even so; anything but ones gives NaN images.
    for module in model.modules():
        if isinstance(module, RMSNorm):
            torch.nn.init.ones_(module.weight)
    return model.eval()


def _unet_config(preset: dict) -> dict:
    """The Kolors U-Net config (SDXL layout, projection of the ChatGLM hidden states) at a tiny width."""
    unet, text_hidden_size = preset["unet"], preset["text_encoder"]["hidden_size"]
    return {
        **unet,
        "sample_size": 32,  # 256 px latents: the pipeline's default size
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "encoder_hid_dim": text_hidden_size,
        "encoder_hid_dim_type": "text_proj",
        "addition_embed_type": "text_time",
        "projection_class_embeddings_input_dim": text_hidden_size + 6 * unet["addition_time_embed_dim"],
        "use_linear_projection": True,
    }


def _vae(preset: dict) -> AutoencoderKL:
    """An SDXL-style VAE; four blocks keep the real 8x down-sampling."""
    with _seeded(SEED + 2):
        vae = AutoencoderKL(
            **preset["vae"],
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=256,
            scaling_factor=0.13025,
            force_upcast=True,
        )
    return vae.eval()


def build_kolors_repo(path, size: str = "tiny") -> Path:
    """Write a tiny Kwai-Kolors/Kolors-diffusers (fp32 files and the fp16 variant) into path."""
    preset, path = _preset(size), Path(path)
    tokenizer = _write_tokenizer(path / "tokenizer", preset["tokenizer_vocab_size"])
    with _seeded(SEED + 1):
        unet = UNet2DConditionModel(**_unet_config(preset)).eval()
    components = {
        "vae": _vae(preset),
        "text_encoder": _text_encoder(preset, tokenizer.vocab_size),
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG),
        "image_encoder": None,
        "feature_extractor": None,
        "force_zeros_for_empty_prompt": False,
    }
    half = {
        name: copy.deepcopy(part).to(torch.float16) if isinstance(part, torch.nn.Module) else part
        for name, part in components.items()
    }
    KolorsPipeline(**half).save_pretrained(path, variant="fp16")
    # Saving rewrites each config's torch_dtype, so the fp32 save comes last.
    KolorsPipeline(**components).save_pretrained(path)
    # save_pretrained writes every default; keep the published files key for key.
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")
    (path / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    return path


def _ip_adapter_state_dict(preset: dict, image_hidden_size: int) -> dict:
    """An IP-Adapter Plus state dict in the original key layout, shaped for the tiny U-Net and CLIP."""
    config = _unet_config(preset)
    cross_dim, proj = config["cross_attention_dim"], preset["image_proj"]
    with _seeded(SEED + 3):
        resampler = IPAdapterPlusImageProjection(
            embed_dims=image_hidden_size,
            output_dims=cross_dim,
            hidden_dims=proj["hidden_dims"],
            depth=4,  # diffusers' converter maps layers 0-3 only
            dim_head=64,  # diffusers infers heads as to_q rows // 64
            heads=proj["hidden_dims"] // 64,
            num_queries=proj["num_queries"],
        )
    state = {f"image_proj.{key}": value for key, value in _resampler_to_original(resampler.state_dict()).items()}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    with _seeded(SEED + 4):
        # diffusers numbers attn1 and attn2 processors together; only attn2 (cross-attention) has IP weights.
        for key_id, name in enumerate(unet.attn_processors):
            if name.endswith("attn1.processor"):
                continue
            hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
            processor = IPAdapterAttnProcessor2_0(hidden, cross_dim, num_tokens=(proj["num_queries"],))
            state[f"ip_adapter.{key_id}.to_k_ip.weight"] = processor.to_k_ip[0].weight.detach()
            state[f"ip_adapter.{key_id}.to_v_ip.weight"] = processor.to_v_ip[0].weight.detach()
    return {key: value.to(torch.float16).contiguous() for key, value in state.items()}


def _resampler_to_original(state: dict) -> dict:
    """Invert diffusers' IP-Adapter Plus key conversion, back to the original Resampler's keys."""
    renames = {
        "ln0.": "0.norm1.",
        "ln1.": "0.norm2.",
        "attn.to_q.": "0.to_q.",
        "attn.to_out.0.": "0.to_out.",
        "ff.0.": "1.0.",
        "ff.1.net.0.proj.": "1.1.",
        "ff.1.net.2.": "1.3.",
    }
    original = {}
    for key, value in state.items():
        if not key.startswith("layers."):
            original[key] = value
            continue
        _, index, rest = key.split(".", 2)
        if rest.startswith("attn.to_k."):
            to_v = state[key.replace("attn.to_k.", "attn.to_v.")]
            original[f"layers.{index}.0.to_kv.{rest.split('.')[-1]}"] = torch.cat([value, to_v])
        elif not rest.startswith("attn.to_v."):
            prefix = next(p for p in renames if rest.startswith(p))
            original[f"layers.{index}.{renames[prefix]}{rest[len(prefix):]}"] = value
    return original


def build_ip_adapter_repo(path, size: str = "tiny") -> Path:
    """Write a tiny Kwai-Kolors/Kolors-IP-Adapter-Plus, as at revision refs/pr/4, into path."""
    preset, path = _preset(size), Path(path)
    config = CLIPVisionConfig(**preset["image_encoder"])
    with _seeded(SEED + 5):
        encoder = CLIPVisionModelWithProjection(config).eval()
    encoder.save_pretrained(path / "image_encoder")
    pixels = config.image_size
    processor = CLIPImageProcessor(size={"shortest_edge": pixels}, crop_size={"height": pixels, "width": pixels})
    processor.save_pretrained(path / "image_encoder")
    save_file(_ip_adapter_state_dict(preset, config.hidden_size), path / IP_ADAPTER_WEIGHT_NAME)
    return path


def _build_version() -> str:
    """Changes with this file, the corpus and the libraries that write the files, so no stale build is reused."""
    addons = Path(__file__).with_name("tiny_addons.py")
    digest = hashlib.sha256(Path(__file__).read_bytes() + addons.read_bytes() + CORPUS_PATH.read_bytes())
    digest.update(f"{diffusers.__version__} {transformers.__version__} {torch.__version__}".encode())
    return digest.hexdigest()[:12]


def tiny_model_dir(size: str = "tiny") -> Path:
    """Build both tiny repos once and return the folder that holds them under their repo ids."""
    _preset(size)
    root = Path(os.environ.get("KOLORS_TINY_DIR") or Path.home() / ".cache" / "kolors-studio" / "tiny")
    target = root / f"{size}-{_build_version()}"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{size}-", dir=root))
    try:
        build_kolors_repo(staging / KOLORS_REPO, size)
        build_ip_adapter_repo(staging / IP_ADAPTER_REPO, size)
        from kolors_app.testing.tiny_addons import build_addon_repos

        build_addon_repos(staging, _unet_config(_preset(size)), KOLORS_REPO)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same build first; its files are identical.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def install_into_hf_cache(cache_dir, size: str = "tiny") -> dict:
    """Install every tiny repo (model, IP-Adapter, Control add-ons) into a Hugging Face hub cache.

    Returns {repo_id: snapshot folder}.
    """
    from kolors_app.testing.tiny_addons import ADDON_REPOS

    source, cache_dir = tiny_model_dir(size), Path(cache_dir)
    ip_adapter_refs = ["main", IP_ADAPTER_REVISION]
    installed = {
        KOLORS_REPO: _install_repo(cache_dir, KOLORS_REPO, source / KOLORS_REPO, ["main"]),
        IP_ADAPTER_REPO: _install_repo(cache_dir, IP_ADAPTER_REPO, source / IP_ADAPTER_REPO, ip_adapter_refs),
    }
    for repo in ADDON_REPOS:
        installed[repo] = _install_repo(cache_dir, repo, source / repo, ["main"])
    return installed


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    staging.write_bytes(data)
    os.replace(staging, path)


def _install_repo(cache_dir: Path, repo_id: str, source: Path, refs: list) -> Path:
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
