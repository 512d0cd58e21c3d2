"""Random-k sparsification on a support shared by the cohort (composes with SecAgg+).

Each round every site keeps the *same* ``k = ⌈ratio · d⌉`` coordinates, drawn from a seed
the whole cohort shares: ``support(r) = sorted(choice(d, k))`` from numpy's generator
seeded with ``(seed, r)`` (ML randomness, seeded and recorded; it depends on no data).
Because the support is public and common, the encoded rows are plain dense vectors of
length ``k`` that any summation adds coordinate by coordinate — a quantiser and SecAgg+
after it mask and sum exactly the kept coordinates, and the server learns nothing beyond
that sum. The server expands the sum back to ``d`` coordinates (zeros elsewhere).

A site sends ``k`` values (float32 in a plain sum, ``b`` bits each under SecAgg+) and no
indices: the seed is part of the round's public parameters.

Error feedback (optional): a site adds its residual ``e`` before selecting and keeps
``e' = (u + e)`` off the support, so every coordinate is eventually sent. It lives in the
site's own state. With it the sent vector depends on past rounds' data, so the stage then
declares ``dp = "unsafe"`` (a chain with a DP mechanism refuses it); without it the stage
is a data-independent projection (norm never grows) and composes with DP stages in any
order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from veil.aggregation.base import FLOAT, DecodeContext, Domain, EncodeContext, expect
from veil.aggregation.topk import check_ratio, kept_count, residuals
from veil.errors import ConfigError, LocalError

__all__ = ["RandK"]


@dataclass(frozen=True)
class RandK:
    """Keep the coordinates of a cohort-wide random support; expand at the server.

    Args:
        ratio: fraction of coordinates sent, in (0, 1].
        dim: the update's length d (the server expands the sum back to it).
        seed: the shared seed of the supports (the run seed).
        error_feedback: keep the coordinates not sent at the site for later rounds.

    Raises:
        ConfigError: ``ratio`` outside (0, 1] or ``dim < 1``.
    """

    ratio: float
    dim: int
    seed: int = 0
    error_feedback: bool = True
    name: str = "randk"

    def __post_init__(self) -> None:
        check_ratio(self.ratio)
        if self.dim < 1:
            raise ConfigError("randk needs the update's dimension (dim ≥ 1)", key="randk.dim")

    @property
    def dp(self) -> str:
        """``"unsafe"`` with error feedback (the residual escapes any clip before it)."""
        return "unsafe" if self.error_feedback else ""

    @property
    def k(self) -> int:
        """Coordinates sent per round."""
        return kept_count(self.ratio, self.dim)

    def domain(self, upstream: Domain) -> Domain:
        """Float vectors in and out (``k`` long)."""
        expect(self.name, upstream, FLOAT)
        return FLOAT

    def init(self) -> None:
        """No server state: the support follows from (seed, round)."""
        return None

    def init_site(self) -> None:
        """No residual before the first round."""
        return None

    def support(self, round: int) -> np.ndarray:
        """The coordinates every site keeps in ``round`` (sorted)."""
        g = np.random.default_rng([int(self.seed), int(round), 0x52414E44])
        return np.sort(g.choice(self.dim, self.k, replace=False))

    def encode(
        self, state: None, site_states: list[Any], updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """The shared support's coordinates of each row (of ``u + e`` with feedback).

        Raises:
            LocalError: rows of another length than ``dim``.
        """
        n, d = updates.shape
        if d != self.dim:
            raise LocalError(f"randk was built for d = {self.dim}, got rows of {d}")
        idx = self.support(ctx.round)
        if not self.error_feedback:
            return np.ascontiguousarray(updates[:, idx]), list(site_states), {}
        x = updates.astype(np.float64) + residuals(site_states, n, d)
        sent = x[:, idx]
        x[:, idx] = 0.0
        return sent, [x[i].copy() for i in range(n)], {
            "residual_norm": np.linalg.norm(x, axis=1)
        }

    def decode(
        self, state: None, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[None, np.ndarray, Mapping[str, float], None]:
        """Scatter the ``k`` summed coordinates back into ``d`` (zeros elsewhere).

        Raises:
            LocalError: the sum is not ``k`` long.
        """
        agg = np.asarray(aggregate, dtype=np.float64)
        if agg.shape != (self.k,):
            raise LocalError(f"randk expected a sum of {self.k} coordinates, got {agg.shape}")
        out = np.zeros(self.dim, dtype=np.float64)
        out[self.support(ctx.round)] = agg
        return None, out, {"kept_fraction": self.k / self.dim}, None
