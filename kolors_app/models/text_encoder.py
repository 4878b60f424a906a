"""The text encoder kept on the CPU while the rest of the pipeline runs on the GPU."""

from __future__ import annotations

import torch


class TextEncoderOnCPU(torch.nn.Module):
    """Runs the text encoder on the CPU; its outputs come back on the caller's device in the pipeline's dtype."""

    def __init__(self, encoder: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        # Not a registered submodule, so pipe.to() and the offload hooks never move it to the GPU.
        object.__setattr__(self, "encoder", encoder.to("cpu"))
        self.output_dtype = dtype
        self.config = encoder.config

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def parameters(self, recurse: bool = True):
        # The real weights, for code that asks where they are; .to() and hooks still see none to move.
        return self.encoder.parameters(recurse)

    @property
    def dtype(self) -> torch.dtype:
        return self.output_dtype

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        target = input_ids.device
        moved = {name: value.to("cpu") for name, value in
                 (("input_ids", input_ids), ("attention_mask", attention_mask), ("position_ids", position_ids))
                 if value is not None}
        output = self.encoder(**moved, **kwargs)
        output["past_key_values"] = None
        output["last_hidden_state"] = output["last_hidden_state"].to(target, self.output_dtype)
        if output.get("hidden_states") is not None:
            output["hidden_states"] = tuple(state.to(target, self.output_dtype) for state in output["hidden_states"])
        return output

