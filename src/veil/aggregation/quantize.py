"""Quantise float updates to b-bit ring integers (and back) so they can be securely summed.

Site side (per coordinate): clip to ``[−clip, clip]``, scale by ``s = L / clip`` and round
*stochastically* to an integer in ``[−L, L]`` (up with probability equal to the fractional
part, using each site's own CSPRNG stream ``ctx.rngs[i]``), so the rounding is unbiased. The level count

    L = ⌊(2^(b−1) − 1) / (margin · n)⌋,   n = cohort bound (default: cohort size)

guarantees that the sum of any n ≤ cohort-bound encodings stays within
``±(2^(b−1)−1)/margin``
— it cannot wrap modulo 2^b, and ``margin > 1`` leaves head-room for integer DP noise
added later (:class:`~veil.aggregation.distributed_dp.DistributedDP`). Server side: take
the centred representative of the sum mod 2^b and divide by s.

Error bound: with m sites in the sum and values inside the clip range, each site's rounding
error per coordinate is unbiased, ``|e| < 1/s`` and ``Var e ≤ 1/(4 s²)``; so the decoded sum
has per-coordinate error with mean 0, standard deviation ≤ √m / (2s) and worst case
< m / s (plus the clipping bias of values outside ``[−clip, clip]``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from veil.aggregation.base import (
    FLOAT,
    DecodeContext,
    Domain,
    EncodeContext,
    SiteStateless,
    expect,
    ring,
)
from veil.crypto.ring import check_bits, to_signed
from veil.errors import ConfigError, LocalError

__all__ = ["Quantize"]


@dataclass(frozen=True)
class Quantize(SiteStateless):
    """Clip, scale and stochastically round to Z_{2^bits}; decode the sum back to floats.

    Args:
        clip: per-coordinate range bound (values are clipped to ``[−clip, clip]``).
        bits: ring width b (must match the summation protocol's).
        margin: head-room factor ≥ 1 (2 leaves half the range for DP noise).
        cohort_bound: most sites that may be summed; defaults to the round's cohort size.
    """

    clip: float
    bits: int = 32
    margin: float = 2.0
    cohort_bound: int | None = None
    name: str = "quantize"

    def __post_init__(self) -> None:
        check_bits(self.bits)
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ConfigError("clip must be a positive finite number", key="quantize.clip")
        if not self.margin >= 1:
            raise ConfigError("margin must be ≥ 1", key="quantize.margin")

    def domain(self, upstream: Domain) -> Domain:
        """Float vectors in, Z_2^bits out."""
        expect(self.name, upstream, FLOAT)
        return ring(self.bits)

    def init(self) -> None:
        """Stateless."""
        return None

    def sites_bound(self, cohort_size: int, fallback: int = 1) -> int:
        """The number of sites the levels are sized for (``cohort_bound`` if set)."""
        return int(self.cohort_bound or cohort_size or fallback)

    def levels(self, n: int) -> int:
        """L, the largest integer a site may send, for a sum of up to ``n`` sites.

        Raises:
            ConfigError: if the ring is too small for ``n`` sites (raise ``bits``).
        """
        L = int(((1 << (self.bits - 1)) - 1) // (self.margin * max(1, n)))
        if L < 1:
            raise ConfigError(
                f"{self.bits}-bit ring too small for {n} sites with margin {self.margin}; "
                "raise bits", key="quantize.bits"
            )
        return L

    def scale(self, n: int) -> float:
        """s = L / clip: integer units per float unit."""
        return self.levels(n) / self.clip

    def headroom(self, n: int) -> int:
        """Largest |integer| the sum may reach beyond the signal before it would wrap."""
        return ((1 << (self.bits - 1)) - 1) - n * self.levels(n)

    def encode(
        self, state: None, site_states: list[Any], updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """Quantise each row to int64 values in ``[−L, L]`` with that site's own stream.

        Raises:
            LocalError: a row has no privacy stream (stochastic rounding needs a CSPRNG).
        """
        x = np.asarray(updates)
        if x.ndim != 2:
            raise LocalError("Quantize expects a 2-D batch of rows")
        rngs = [ctx.row_rng(i, "Quantize (stochastic rounding)") for i in range(x.shape[0])]
        n = self.sites_bound(ctx.cohort_size, x.shape[0])
        scale, lv = self.scale(n), self.levels(n)
        q = np.empty(x.shape, dtype=np.int64)
        clipped = np.empty(x.shape[0], dtype=np.float64)
        for i in range(x.shape[0]):  # row by row: the temporaries stay in cache
            row = x[i].astype(np.float64)
            clipped[i] = np.count_nonzero(np.abs(row) > self.clip) / max(1, row.size)
            np.clip(row, -self.clip, self.clip, out=row)
            row *= scale
            low = np.floor(row)
            row -= low  # the fractional part
            # Round up with probability frac: compare 32 CSPRNG bits with frac · 2^32 (off
            # by < 2^-32 per coordinate, far below the rounding noise itself).
            bits = np.frombuffer(rngs[i].bytes(4 * row.size), dtype="<u4")
            row *= 4294967296.0
            np.add(low.astype(np.int64), bits < row, out=q[i])
        np.clip(q, -lv, lv, out=q)
        return q, site_states, {"clipped_fraction": clipped}

    def decode(
        self, state: None, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[None, np.ndarray, Mapping[str, float], Any]:
        """Centre the sum mod 2^b and rescale to floats.

        Raises:
            LocalError: if more sites were summed than the level count allows.
        """
        n = self.sites_bound(ctx.cohort_size, len(ctx.survivors))
        if len(ctx.survivors) > n:
            raise LocalError(f"{len(ctx.survivors)} sites summed but levels sized for {n}")
        total = to_signed(np.asarray(aggregate), self.bits)
        bound = len(ctx.survivors) * self.levels(n)
        meas = {
            "scale": self.scale(n),
            "beyond_signal_fraction": float(np.mean(np.abs(total) > bound)) if total.size else 0.0,
        }
        return None, total.astype(np.float64) / self.scale(n), meas, None
