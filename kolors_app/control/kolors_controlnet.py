"""Kolors' ControlNet as diffusers' ControlNetModel plus the text projection its forward leaves out."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import ControlNetModel
from diffusers.models.controlnets import MultiControlNetModel


class KolorsControlNetModel(ControlNetModel):
    """diffusers' ControlNetModel as Kolors trained it: the ChatGLM embeddings pass its own text projection first.

    diffusers builds `encoder_hid_proj` (4096 -> 2048) from the config but its forward never applies it,
    while the U-Net applies its own; the SDXL pipelines hand both the same unprojected embeddings.
    """

    def forward(self, sample, timestep, encoder_hidden_states, *args, **kwargs):
        return super().forward(sample, timestep, self.encoder_hid_proj(encoder_hidden_states), *args, **kwargs)


def load_controlnet(folder: str | Path, dtype: torch.dtype) -> KolorsControlNetModel:
    """Read a Kolors ControlNet folder (config.json + diffusion_pytorch_model.safetensors)."""
    return KolorsControlNetModel.from_pretrained(str(folder), torch_dtype=dtype).eval()


def combined(models: list[KolorsControlNetModel]):
    """One ControlNet as it is; several as diffusers' MultiControlNetModel (residuals summed)."""
    return models[0] if len(models) == 1 else MultiControlNetModel(models)
