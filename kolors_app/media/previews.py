"""Cheap live previews: project SDXL-VAE latents straight to RGB, no VAE decode per step."""

from __future__ import annotations

import torch
from PIL import Image

# A linear fit from the 4 SDXL-VAE latent channels to RGB (the VAE Kolors uses); good enough to see
# composition and colour while a run is going, at the cost of one tiny matmul.
LATENT_RGB_FACTORS = torch.tensor([
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
])
LATENT_RGB_BIAS = torch.tensor([0.1084, -0.0175, -0.0011])


def latents_to_preview(latents: torch.Tensor, size: int = 256) -> Image.Image:
    """An RGB approximation of one image's latents (shape 4 x h x w), at most `size` px wide."""
    latents = latents.detach().float().cpu()
    rgb = torch.einsum("chw,cr->hwr", latents, LATENT_RGB_FACTORS) + LATENT_RGB_BIAS
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    image = Image.fromarray(pixels, "RGB")
    scale = max(1, size // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
