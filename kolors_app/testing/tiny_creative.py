"""Tiny random-weight LoRAs and a tiny ESRGAN upscaler for the tiny Kolors, in the real file layouts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from kolors_app.testing.tiny_presets import SEED, seeded

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["query_key_value", "dense"]
RANK = 4


def _lora_layers(model: torch.nn.Module, targets: list[str], seed: int) -> dict[str, torch.Tensor]:
    """PEFT LoRA layers for model, with random A and B (a fresh B is zero and would change nothing)."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    model = copy.deepcopy(model)
    config = LoraConfig(r=RANK, lora_alpha=RANK, target_modules=targets, init_lora_weights=False)
    with seeded(seed):
        inject_adapter_in_model(config, model, adapter_name="default")
        state = get_peft_model_state_dict(model, adapter_name="default")
        # Large enough to change a tiny model's pixels visibly, small enough to keep them finite.
        return {key: (torch.randn_like(value) * 0.3).contiguous() for key, value in state.items()}


def text_encoder_layers(pipe, seed: int) -> dict[str, torch.Tensor]:
    """The PEFT-form ChatGLM layers the builders write for this seed (to load them with PEFT's own code)."""
    return _lora_layers(pipe.text_encoder, TEXT_ENCODER_TARGETS, seed)


def build_diffusers_lora(pipe, path, text_encoder: bool = False, seed: int = SEED + 10) -> Path:
    """A folder with pytorch_lora_weights.safetensors (diffusers format), U-Net and optionally ChatGLM layers."""
    from diffusers import KolorsPipeline
    from peft.utils import get_peft_model_state_dict  # noqa: F401  (peft is required)

    path = Path(path)
    unet = _lora_layers(pipe.unet, UNET_TARGETS, seed)
    te = _lora_layers(pipe.text_encoder, TEXT_ENCODER_TARGETS, seed + 1) if text_encoder else None
    KolorsPipeline.save_lora_weights(path, unet_lora_layers=unet, text_encoder_lora_layers=te,
                                     safe_serialization=True)
    return path


def build_peft_text_encoder_adapter(pipe, path, seed: int = SEED + 12, alpha: float = RANK) -> Path:
    """A PEFT adapter folder for ChatGLM (adapter_config.json, adapter_model.safetensors), as Kolors' DreamBooth has."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    layers = _lora_layers(pipe.text_encoder, TEXT_ENCODER_TARGETS, seed)
    save_file({f"base_model.model.{key}": value for key, value in layers.items()}, path / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": RANK, "lora_alpha": alpha, "target_modules": TEXT_ENCODER_TARGETS,
              "task_type": None, "bias": "none"}
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return path


def build_kohya_lora(pipe, path, seed: int = SEED + 14, text_encoder: bool = False,
                     text_alpha: float = RANK) -> Path:
    """One .safetensors file with kohya-style keys (lora_unet_..., lora_down/lora_up/alpha).

    `text_encoder`: ChatGLM layers too (lora_te_..., text_encoder_layers(pipe, seed + 1)), each alpha `text_alpha`.
    """
    parts = [("lora_unet_", _lora_layers(pipe.unet, UNET_TARGETS, seed), float(RANK))]
    if text_encoder:
        parts.append(("lora_te_", text_encoder_layers(pipe, seed + 1), text_alpha))
    state = {}
    for prefix, layers, alpha in parts:
        for key, value in layers.items():
            module, part = key.rsplit(".lora_", 1)
            name = prefix + module.replace(".", "_")
            state[f"{name}.{'lora_down' if part.startswith('A') else 'lora_up'}.weight"] = value
            state[f"{name}.alpha"] = torch.tensor(float(alpha))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path, metadata={"ss_network_module": "networks.lora"})
    return path


def build_mismatched_lora(pipe, path, seed: int = SEED + 16) -> Path:
    """A kohya LoRA made for another U-Net: cross-attention keys 48 wide, as SD1.5's 768 are to Kolors' 2048."""
    layers = _lora_layers(pipe.unet, ["attn2.to_k", "attn2.to_v"], seed)
    state = {}
    for key, value in layers.items():
        module, part = key.rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        if part.startswith("A"):
            value = torch.randn(value.shape[0], 48)
        state[f"{name}.{'lora_down' if part.startswith('A') else 'lora_up'}.weight"] = value.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path, metadata={"ss_base_model_version": "sd_v1"})
    return path


def build_lora_folder(pipe, folder) -> Path:
    """A --lora-dir with one LoRA of each kind the tests and the tiny app use."""
    folder = Path(folder)
    build_diffusers_lora(pipe, folder / "tiny-style")
    build_diffusers_lora(pipe, folder / "tiny-text", text_encoder=True, seed=SEED + 20)
    build_kohya_lora(pipe, folder / "tiny-kohya.safetensors")
    build_mismatched_lora(pipe, folder / "sd15-style.safetensors")
    return folder


def build_esrgan(path, scale: int = 4, features: int = 8, blocks: int = 1, growth: int = 32) -> Path:
    """A tiny RRDBNet (ESRGAN) state dict with the original key layout (spandrel assumes 32 growth channels)."""
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, cin: int, cout: int):
        state[f"{name}.weight"] = torch.randn(cout, cin, 3, 3) * 0.05
        state[f"{name}.bias"] = torch.zeros(cout)

    with seeded(SEED + 30):
        conv("conv_first", 3, features)
        for block in range(blocks):
            for rdb in range(1, 4):
                for index in range(1, 6):
                    cin = features + (index - 1) * growth
                    cout = growth if index < 5 else features
                    conv(f"body.{block}.rdb{rdb}.conv{index}", cin, cout)
        conv("conv_body", features, features)
        for index in range(1, scale // 2 + 1):
            conv(f"conv_up{index}", features, features)
        conv("conv_hr", features, features)
        conv("conv_last", features, 3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path
