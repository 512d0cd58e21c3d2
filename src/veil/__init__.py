"""veil: machine learning across sites that must not expose their data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from veil.errors import (
    BudgetExceededError,
    ConfigError,
    DataError,
    VeilError,
)

if TYPE_CHECKING:
    import os

    from torch import nn

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "VeilError",
    "ConfigError",
    "DataError",
    "BudgetExceededError",
    "load_model",
]


def load_model(run_dir: str | os.PathLike[str], model: nn.Module | None = None) -> nn.Module:
    """A finished run's trained model, in eval mode (see :func:`veil.models.export.load_model`).

    Imports torch only when called, so ``import veil`` stays light.
    """
    from veil.models.export import load_model as _load_model

    return _load_model(run_dir, model)
