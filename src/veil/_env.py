"""Versions of Python and veil's dependencies (recorded in runs, logs and benchmarks)."""

from __future__ import annotations

import platform
from importlib import metadata

__all__ = ["versions", "PACKAGES"]

PACKAGES = (
    "veil",
    "torch",
    "numpy",
    "scikit-learn",
    "opacus",
    "dp-accounting",
    "cryptography",
    "tenseal",
    "pydantic",
    "rich",
    "matplotlib",
)


def versions() -> dict[str, str]:
    """Python and dependency versions (``"missing"`` where a package is not installed)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out
