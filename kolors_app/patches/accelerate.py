"""accelerate's private names the app reads: the offload hook on a module."""

from __future__ import annotations

import torch

from kolors_app.patches.versions import Touched

DISTRIBUTION = "accelerate"
TOUCHED = {
    "offload_device": (
        Touched("accelerate.hooks", "_hf_hook", label="accelerate.hooks.add_hook_to_module(...)._hf_hook",
                instance=lambda hooks: hooks.add_hook_to_module(torch.nn.Linear(1, 1), hooks.ModelHook())),
        Touched("accelerate.hooks:CpuOffload", "__init__", parameters=("execution_device",)),
    ),
}


def offload_device(module):
    """The device accelerate's offload hook runs the module on; None without such a hook."""
    return getattr(getattr(module, "_hf_hook", None), "execution_device", None)
