"""Flat parameter vectors (``named_parameters`` order), shared by training and attacks."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["flat_params", "load_flat_params"]


def flat_params(model: nn.Module) -> torch.Tensor:
    """The model's parameters as one flat float32 vector."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(torch.float32)


def load_flat_params(model: nn.Module, flat: torch.Tensor) -> None:
    """Write a flat vector back into the model's parameters.

    Raises:
        veil.errors.LocalError: if the vector's length does not match the model.
    """
    from veil.errors import LocalError

    n = sum(p.numel() for p in model.parameters())
    if flat.numel() != n:
        raise LocalError(f"parameter vector has {flat.numel()} values, the model needs {n}")
    i = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[i : i + p.numel()].view_as(p))
            i += p.numel()
