"""The generation request, its parts and its results, and how a request is written as flat parameters."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from kolors_app.core.creative_fields import HiresFix, LoraChoice
from kolors_app.core.schedulers import DEFAULT_SCHEDULER

MAX_SEED = 2**32 - 1
MODEL_NAME = "Kolors"
MODES = ("text_to_image", "image_to_image", "ip_adapter", "inpaint")
CONTROL_TYPES = ("canny", "depth", "pose")
MAX_CONTROL_UNITS = 3
INPAINT_AREAS = ("whole", "masked")
INPAINT_MODELS = ("inpainting", "base")
OUTPAINT_SIDES = ("left", "right", "up", "down")
# Settings a mode starts from when a saved or API request leaves them out (upstream's recommendations).
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "text_to_image": {"num_inference_steps": 50, "guidance_scale": 5.0},
    "image_to_image": {"num_inference_steps": 50, "guidance_scale": 5.0, "strength": 0.7},
    "ip_adapter": {"num_inference_steps": 25, "guidance_scale": 6.5, "strength": 0.7},
    "inpaint": {"num_inference_steps": 25, "guidance_scale": 6.0, "strength": 0.999},
}


@dataclass
class InitImage:
    """Start from this image instead of noise; `strength` (0..1] says how much of it is repainted."""

    image: Image.Image | None = field(default=None, repr=False)
    strength: float = 0.7


@dataclass
class Inpaint:
    """Repaint the init image only where the mask is white; needs `init`. Outpainting extends the canvas first.

    `area`: "whole" picture, or "masked" (crop around the mask plus `padding`, generate, paste back).
    `model`: "inpainting" (the 9-channel Kolors-Inpainting U-Net) or "base" (the base U-Net, latents
    blended outside the mask). `outpaint`: pixels added on the left, right, top and bottom (the mask then
    covers the new area too).
    """

    mask: Image.Image | None = field(default=None, repr=False)
    mask_blur: int = 4
    area: str = "whole"
    padding: int = 32
    keep_unmasked: bool = True
    model: str = "inpainting"
    outpaint: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class Reference:
    """A reference image for IP-Adapter Plus and how strongly it steers the result."""

    image: Image.Image | None = field(default=None, repr=False)
    scale: float = 0.5


@dataclass
class ControlUnit:
    """One ControlNet: its type, its image (a photo, or with preprocess=False the map itself) and its strength.

    `start`/`end` are the fractions of the steps it acts on; the thresholds are canny's.
    """

    type: str = "canny"
    image: Image.Image | None = field(default=None, repr=False)
    preprocess: bool = True
    scale: float = 0.7
    start: float = 0.0
    end: float = 0.9
    low_threshold: int = 100
    high_threshold: int = 200


@dataclass
class GenerationRequest:
    """One generation, made of parts; each part is optional and validated on its own.

    - the common settings: prompt ... num_images;
    - the base: text only (init None), an init image (`init`), or an init image and a mask (`init` + `inpaint`);
    - `reference`: an IP-Adapter reference image;
    - `controls`: up to three ControlNet units;
    - the creative part: LoRAs, style names, a hires fix (typed: core/creative_fields.py).

    `mode` (derived: inpaint > ip_adapter > image_to_image > text_to_image) names the tab and is recorded
    in metadata and history. generation.py turns the parts into one diffusers call.
    """

    prompt: str = ""
    negative_prompt: str = ""
    width: int = 1024
    height: int = 1024
    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    scheduler: str = DEFAULT_SCHEDULER
    seed: int | None = None
    num_images: int = 1
    init: InitImage | None = None
    inpaint: Inpaint | None = None
    reference: Reference | None = None
    controls: list[ControlUnit] = field(default_factory=list)
    loras: list[LoraChoice] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    hires: HiresFix | None = None

    @property
    def mode(self) -> str:
        """The mode this request is shown and recorded as."""
        if self.inpaint is not None:
            return "inpaint"
        if self.reference is not None:
            return "ip_adapter"
        return "image_to_image" if self.init is not None else "text_to_image"

    @property
    def init_image(self) -> Image.Image | None:
        """The init image, or None for a text-only base."""
        return self.init.image if self.init is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The parameters as flat JSON values (the API's names); images are left out."""
        values: dict[str, Any] = {"mode": self.mode}
        values.update({name: getattr(self, name) for name in COMMON_FIELDS})
        if self.init is not None:
            values["strength"] = self.init.strength
        if self.reference is not None:
            values["ip_adapter_scale"] = self.reference.scale
        if self.inpaint is not None:
            values.update(inpaint_values(self.inpaint))
        for index, unit in enumerate(self.controls):
            values.update(control_values(unit, index))
        if self.styles:
            values["styles"] = list(self.styles)
        if self.loras:
            values["loras"] = [choice.to_dict() for choice in self.loras]
        if self.hires is not None:
            values.update(self.hires.flat_values())
        return values


COMMON_FIELDS = ("prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale",
                 "scheduler", "seed", "num_images")
# Inpaint attribute -> flat parameter name (and the API's).
INPAINT_NAMES = {"mask_blur": "mask_blur", "area": "inpaint_area", "padding": "inpaint_padding",
                 "keep_unmasked": "keep_unmasked", "model": "inpaint_model"}
CONTROL_ATTRIBUTES = ("type", "preprocess", "scale", "start", "end", "low_threshold", "high_threshold")


def control_name(attribute: str, index: int) -> str:
    """The flat parameter name of a unit's attribute: control_scale, control_scale_2, control_scale_3."""
    return f"control_{attribute}" + (f"_{index + 1}" if index else "")


def inpaint_values(inpaint: Inpaint) -> dict[str, Any]:
    """The inpaint part as flat parameters."""
    values = {name: getattr(inpaint, attribute) for attribute, name in INPAINT_NAMES.items()}
    values.update({f"outpaint_{side}": pixels for side, pixels in zip(OUTPAINT_SIDES, inpaint.outpaint)})
    return values


def control_values(unit: ControlUnit, index: int) -> dict[str, Any]:
    """One control unit as flat parameters."""
    return {control_name(attribute, index): getattr(unit, attribute) for attribute in CONTROL_ATTRIBUTES}


@dataclass
class GeneratedImage:
    """One image and the exact parameters that made it (its own seed included)."""

    image: Image.Image
    seed: int
    parameters: dict[str, Any]


@dataclass
class GenerationResult:
    """The images of one request; `stopped` is set (and `images` empty) when the user stopped it."""

    images: list[GeneratedImage]
    request: GenerationRequest
    warnings: list[str] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0
    # Maps the control units were given, one per unit (what the preprocessors made), for the UI to show.
    control_maps: list[Image.Image] = field(default_factory=list)
    # A stopped run: a small preview of each image's latents at the step it stopped (empty before the first step).
    previews: list[Image.Image] = field(default_factory=list)


def concrete_seed(seed: int | None) -> int:
    """The seed to use: the given one, or a fresh random one in [0, 2**32-1]."""
    return random.randint(0, MAX_SEED) if seed is None else seed
