"""Memory per plan with ControlNets and the inpainting U-Net: estimated from parameter bytes (no GPU needed).

    python -m bench.control          # prints the table, writes bench/results/control.json

The add-on sizes are fp16 bytes of the published files (a ControlNet is 2.5 GB in fp32; the inpainting U-Net
has the base U-Net's size); with --tiny they are measured from the parameters of the tiny models instead, the
way memory.learn_sizes records them once a model is loaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kolors_app.models import memory
from kolors_app.models.memory import LADDER, Features, peak_gib

CASES = {"base": Features(), "+1 ControlNet": Features(controlnets=1), "+2 ControlNets": Features(controlnets=2),
         "inpainting U-Net": Features(inpainting_unet=True),
         "inpainting U-Net + 2 ControlNets": Features(controlnets=2, inpainting_unet=True)}


def parameter_bytes_of_tiny() -> dict[str, int]:
    """Bytes of the tiny ControlNet and inpainting U-Net, counted from their parameters."""
    import torch
    from diffusers import UNet2DConditionModel

    from kolors_app.core.addons import CONTROLNET_REPOS, INPAINTING_REPO
    from kolors_app.control.controlnets import controlnet_bytes
    from kolors_app.control.kolors_controlnet import load_controlnet
    from kolors_app.testing.tiny import tiny_model_dir

    root = tiny_model_dir()
    controlnet = load_controlnet(root / CONTROLNET_REPOS["canny"], torch.float16)
    unet = UNet2DConditionModel.from_pretrained(root / INPAINTING_REPO, subfolder="unet", variant="fp16",
                                                torch_dtype=torch.float16)
    return {"controlnet": controlnet_bytes(controlnet), "inpainting_unet": controlnet_bytes(unet)}


def table() -> list[dict]:
    """Peak GiB per plan and case, 1024x1024, one image."""
    rows = []
    for plan in LADDER:
        row = {"plan": plan.name}
        row.update({case: round(peak_gib(plan, features), 1) for case, features in CASES.items()})
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="measure the add-on sizes from the tiny models")
    args = parser.parse_args()
    if args.tiny:
        memory.learn_sizes(**parameter_bytes_of_tiny())
    rows = table()
    header = ["plan", *CASES]
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in header) + " |")
    sizes = {name: round(size, 3) for name, size in memory.ADDON_GB.items()}
    out = Path(__file__).parent / "results" / "control.json"
    out.write_text(json.dumps({"addon_gb_fp16": sizes, "peak_gib_1024px": rows,
                               "basis": "estimated from parameter bytes; not measured on a GPU"}, indent=2) + "\n")
    print(f"add-on sizes (GB, fp16): {sizes}; written to {out}")


if __name__ == "__main__":
    main()
