"""veil: machine learning across sites that must not expose their data."""

from __future__ import annotations

from veil.errors import (
    BudgetExceededError,
    ConfigError,
    DataError,
    VeilError,
)

__version__ = "0.1.0"

__all__ = ["__version__", "VeilError", "ConfigError", "DataError", "BudgetExceededError"]
