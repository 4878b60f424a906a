"""Upscalers: Lanczos and latent built in, super-resolution models (ESRGAN family) from a folder through spandrel,
tiled."""

from __future__ import annotations

import logging
import pickle
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kolors_app.core.creative_fields import LATENT
from kolors_app.core.errors import ValidationError

log = logging.getLogger(__name__)

DEFAULT_UPSCALER_DIR = Path("models/upscalers")
LANCZOS = "Lanczos"
BUILT_IN = (LATENT, LANCZOS)
MODEL_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")
TILE = 192
OVERLAP = 16
MAX_FACTOR = 4.0


@dataclass
class UpscalerModel:
    """A super-resolution model loaded by spandrel: the module and its own scale."""

    name: str
    module: torch.nn.Module
    scale: int


class UpscalerLibrary:
    """The built-in upscalers plus the model files of a folder; one model kept loaded at a time."""

    def __init__(self, folder: str | Path = DEFAULT_UPSCALER_DIR, device: str = "cpu"):
        self.folder = Path(folder)
        self.device = device
        self._files: dict[str, Path] = {}
        self._loaded: UpscalerModel | None = None
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> list[str]:
        """Scan the folder again for model files."""
        files = {}
        if self.folder.is_dir():
            for path in sorted(self.folder.rglob("*")):
                if path.suffix.lower() in MODEL_SUFFIXES and path.is_file():
                    files[path.relative_to(self.folder).with_suffix("").as_posix()] = path
        self._files = files
        return self.names()

    def names(self, latent: bool = True) -> list[str]:
        """Every upscaler: built-in first, then the folder's models; Latent only where a VAE follows (hires fix)."""
        return [name for name in BUILT_IN if latent or name != LATENT] + sorted(self._files)

    def check(self, name: str, field_name: str = "upscaler", latent: bool = True) -> str:
        """The name if known, else a clear error naming the field."""
        if name not in self.names(latent):
            raise ValidationError(field_name, f"unknown upscaler {name!r}; known: {', '.join(self.names(latent))}")
        return name

    def model(self, name: str) -> UpscalerModel:
        """The spandrel model of this name (loaded once; another model's memory is released first)."""
        with self._lock:
            if self._loaded is not None and self._loaded.name == name:
                return self._loaded
            import spandrel

            self._loaded = None
            try:
                descriptor = spandrel.ModelLoader(device=self.device).load_from_file(str(self._files[name]))
            except (spandrel.UnsupportedModelError, ValueError, RuntimeError, pickle.UnpicklingError,
                    EOFError) as error:
                raise ValidationError("upscaler", f"{name!r} is not a model spandrel can load: {error}") from None
            if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.input_channels != 3:
                raise ValidationError("upscaler", f"{name!r} is not an RGB image-to-image model")
            descriptor.model.eval()
            self._loaded = UpscalerModel(name, descriptor.model, descriptor.scale)
            log.info("loaded upscaler %s (%dx, %s)", name, descriptor.scale, descriptor.architecture.name)
            return self._loaded

    def upscale(self, image: Image.Image, name: str, factor: float, tile: int = TILE) -> Image.Image:
        """The image made factor times larger by this upscaler (a model runs tiled, then Lanczos to the exact size)."""
        self.check(name, latent=False)
        factor = check_factor(factor)
        image = image.convert("RGB")
        size = (round(image.width * factor), round(image.height * factor))
        if name == LANCZOS:
            return image.resize(size, Image.LANCZOS)
        model = self.model(name)
        current = image
        # A 4x model asked for 8x runs twice; asked for 2x, once and then scaled down.
        while current.width < size[0]:
            current = run_tiled(model, current, tile)
        return current if current.size == size else current.resize(size, Image.LANCZOS)


def check_factor(factor, field_name: str = "upscale_factor", high: float = MAX_FACTOR) -> float:
    """A scale factor from 1 to high."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1.0 <= factor <= high:
        raise ValidationError(field_name, f"must be a number from 1 to {high:g}, got {factor!r}")
    return float(factor)


def run_tiled(model: UpscalerModel, image: Image.Image, tile: int = TILE, overlap: int = OVERLAP) -> Image.Image:
    """Run the model on overlapping tiles and blend them: memory grows with the tile, not with the image."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    height, width = pixels.shape[1:]
    scale = model.scale
    parameter = next(model.module.parameters())
    out = torch.zeros(3, height * scale, width * scale)
    weight = torch.zeros(1, height * scale, width * scale)
    step = max(tile - 2 * overlap, 1)
    for top in range(0, height, step):
        for left in range(0, width, step):
            y0, x0 = max(min(top, height - tile), 0), max(min(left, width - tile), 0)
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            piece = pixels[:, y0:y1, x0:x1].unsqueeze(0).to(parameter.device, parameter.dtype)
            with torch.no_grad():
                result = model.module(piece)[0].float().cpu().clamp(0, 1)
            mask = _feather(y1 - y0, x1 - x0, overlap, scale)
            out[:, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += result * mask
            weight[:, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += mask
            if x1 == width:
                break
        if y1 == height:
            break
    array = (out / weight.clamp(min=1e-6)).permute(1, 2, 0).numpy()
    return Image.fromarray((array * 255.0).round().clip(0, 255).astype(np.uint8))


def _feather(height: int, width: int, overlap: int, scale: int) -> torch.Tensor:
    """Weights that fall off linearly over the overlap at every edge, so seams blend."""
    ramp = overlap * scale

    def axis(length: int) -> torch.Tensor:
        positions = torch.arange(length * scale, dtype=torch.float32)
        edge = torch.minimum(positions + 1, length * scale - positions)
        return (edge / max(ramp, 1)).clamp(max=1.0)

    return (axis(height)[:, None] * axis(width)[None, :]).unsqueeze(0)


def upscale_latents(latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """A1111's Latent upscaler: bilinear on the latents to the target size / 8."""
    return torch.nn.functional.interpolate(latents, size=(height // 8, width // 8), mode="bilinear",
                                           antialias=False)
