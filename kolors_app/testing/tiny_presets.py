"""Sizes, configs, repo ids and seeds that every tiny model builder shares."""

import contextlib
from pathlib import Path

import torch

from kolors_app.core.addons import CONTROLNET_REPOS, DEPTH_REPO, INPAINTING_REPO, POSE_REPO

KOLORS_REPO = "Kwai-Kolors/Kolors-diffusers"
IP_ADAPTER_REPO = "Kwai-Kolors/Kolors-IP-Adapter-Plus"
IP_ADAPTER_REVISION = "refs/pr/4"
IP_ADAPTER_WEIGHT_NAME = "ip_adapter_plus_general.safetensors"
SEED = 0
ADDON_REPOS = (*CONTROLNET_REPOS.values(), INPAINTING_REPO, DEPTH_REPO, POSE_REPO)
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


def preset_of(size: str) -> dict:
    """The widths of one size of tiny model; a clear error for an unknown size."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    return SIZES[size]


@contextlib.contextmanager
def seeded(seed: int):
    """Seed torch's CPU RNG inside the block, leaving the caller's RNG state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def unet_config(preset: dict) -> dict:
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

