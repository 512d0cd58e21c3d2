"""Flat parameter vectors (same order as ``named_parameters``), kept local to the audit
layer so that attacks need only models and data, not the federation runtime."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["flat_params", "load_flat_params"]


def flat_params(model: nn.Module) -> torch.Tensor:
    """The model's parameters as one flat float32 vector."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(torch.float32)


def load_flat_params(model: nn.Module, flat: torch.Tensor) -> None:
    """Write a flat vector back into the model's parameters."""
    i = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[i : i + p.numel()].view_as(p))
            i += p.numel()
