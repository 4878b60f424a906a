"""Build a tiny random-weight Kwai-Kolors/Kolors-IP-Adapter-Plus offline: CLIP image encoder and IP-Adapter weights."""

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import IPAdapterPlusImageProjection
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from kolors_app.testing.tiny_presets import IP_ADAPTER_WEIGHT_NAME, SEED, preset_of, seeded, unet_config


def _ip_adapter_state_dict(preset: dict, image_hidden_size: int) -> dict:
    """An IP-Adapter Plus state dict in the original key layout, shaped for the tiny U-Net and CLIP."""
    config = unet_config(preset)
    cross_dim, proj = config["cross_attention_dim"], preset["image_proj"]
    with seeded(SEED + 3):
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
    with seeded(SEED + 4):
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
    preset, path = preset_of(size), Path(path)
    config = CLIPVisionConfig(**preset["image_encoder"])
    with seeded(SEED + 5):
        encoder = CLIPVisionModelWithProjection(config).eval()
    encoder.save_pretrained(path / "image_encoder")
    pixels = config.image_size
    processor = CLIPImageProcessor(size={"shortest_edge": pixels}, crop_size={"height": pixels, "width": pixels})
    processor.save_pretrained(path / "image_encoder")
    save_file(_ip_adapter_state_dict(preset, config.hidden_size), path / IP_ADAPTER_WEIGHT_NAME)
    return path

