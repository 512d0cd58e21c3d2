"""Sites' training data stacked into one padded tensor, for vectorised access."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from veil.errors import DataError

__all__ = ["SiteData", "check_parts", "per_example_loss"]


def check_parts(parts: Sequence[np.ndarray], n: int) -> None:
    """Each site's row indices must be integers in ``[0, n)``.

    Raises:
        DataError: naming the site and the first index outside the data.
    """
    for i, p in enumerate(parts):
        a = np.asarray(p)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"site {i}: row indices must be integers, got {a.dtype}")
        bad = a[(a < 0) | (a >= n)] if a.size else a
        if bad.size:
            raise DataError(f"site {i}: row index {int(bad[0])} is outside the data "
                            f"({n} training examples, indices 0..{n - 1})")


class SiteData:
    """The sites' training data, padded into one tensor for vectorised access.

    Args:
        x: full training features.
        y: full training labels.
        parts: one index array per site (from :func:`veil.data.partition`).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, parts: Sequence[np.ndarray]) -> None:
        if len(x) != len(y):
            raise DataError(f"features ({len(x)}) and labels ({len(y)}) differ in length")
        check_parts(parts, len(x))
        self._stack([(x[p], y[p]) for p in parts], x.shape[1:], y.dtype)

    @classmethod
    def from_sites(cls, sites: Sequence[tuple[np.ndarray, np.ndarray]]) -> SiteData:
        """Stack each site's own ``(x, y)`` (what a :class:`veil.federation.Site` holds).

        Raises:
            DataError: no sites, an empty site, or features and labels of different length.
        """
        if not sites:
            raise DataError("every site needs at least one training example")
        for x, y in sites:
            if len(x) != len(y):
                raise DataError(f"features ({len(x)}) and labels ({len(y)}) differ in length")
        self = cls.__new__(cls)
        self._stack(list(sites), sites[0][0].shape[1:], sites[0][1].dtype)
        return self

    def _stack(
        self, sites: list[tuple[np.ndarray, np.ndarray]], feat: tuple[int, ...], ydt: np.dtype
    ) -> None:
        self.n_sites = len(sites)
        self.sizes = np.asarray([len(y) for _, y in sites], dtype=np.int64)
        if self.n_sites == 0 or self.sizes.min() < 1:
            raise DataError("every site needs at least one training example")
        m = int(self.sizes.max())
        xs = np.zeros((self.n_sites, m) + tuple(feat), dtype=np.float32)
        ys = np.zeros((self.n_sites, m), dtype=ydt)
        for i, (x, y) in enumerate(sites):
            xs[i, : len(y)] = x
            ys[i, : len(y)] = y
        self.x = torch.from_numpy(xs)
        self.y = torch.from_numpy(ys)

    def site(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Site ``i``'s examples (unpadded)."""
        n = int(self.sizes[i])
        return self.x[i, :n], self.y[i, :n]


def per_example_loss(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Loss of each example: cross-entropy for classification, squared error for regression."""
    if task == "regression":
        return (out.reshape(-1) - y.to(out.dtype)) ** 2
    return nn.functional.cross_entropy(out, y, reduction="none")
