"""Plain stages: norm clipping, weighted / uniform means, and the plain (non-secure) sum."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from veil.aggregation.base import (
    FLOAT,
    DecodeContext,
    Domain,
    EncodeContext,
    SiteStateless,
    SumResult,
    expect,
)
from veil.errors import AbortError, ConfigError

__all__ = ["Clip", "WeightedMean", "UniformMean", "PlainSum", "l2_clip"]


def l2_clip(updates: np.ndarray, clip_norm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale each row to L2 norm at most ``clip_norm`` (the one clipping rule of veil's
    stages: DP-FedAvg and distributed DP use it too).

    Returns:
        ``(clipped, norms, was_clipped)``.
    """
    norms = np.linalg.norm(updates, axis=1)
    scale = np.minimum(1.0, clip_norm / np.maximum(norms, 1e-12))
    return updates * scale[:, None], norms, norms > clip_norm


@dataclass(frozen=True)
class Clip(SiteStateless):
    """Clip each site's update to L2 norm ``clip_norm`` (site side; identity at the server).

    Measurements: ``clipped`` (fraction of sites clipped) and ``norm`` (mean pre-clip norm).
    """

    clip_norm: float
    name: str = "clip"

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ConfigError(
                f"clip_norm must be > 0, got {self.clip_norm}", key="aggregation.clip_norm"
            )

    def domain(self, upstream: Domain) -> Domain:
        """Float vectors in and out."""
        expect(self.name, upstream, FLOAT)
        return FLOAT

    def init(self) -> None:
        """Stateless."""
        return None

    def encode(
        self, state: None, site_states: list[Any], updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """Clip each row; measurements: which rows were clipped and their norms."""
        clipped, norms, was = l2_clip(updates, self.clip_norm)
        return clipped, site_states, {"clipped": was.astype(np.float64), "norm": norms}

    def decode(
        self, state: None, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[None, np.ndarray, Mapping[str, float], None]:
        """Identity."""
        return None, aggregate, {}, None


@dataclass(frozen=True)
class WeightedMean(SiteStateless):
    """FedAvg weighting: each site sends ``w·u`` and ``w`` (one extra coordinate); the server
    divides the summed vector by the summed weight. ``w`` is the site's example count.

    Not for differentially private pipelines (the weight is data-dependent): a chain with
    a DP mechanism refuses it (``dp = "unsafe"``); use :class:`UniformMean` or the DP
    stages, which divide by a fixed denominator.

    Under a ring summation (SecAgg+) the weight travels under the mask in the same vector,
    so the quantiser needs a declared range for it: with ``max_weight = W`` (a public bound
    on a site's weight) each site sends ``[(w/W)·u, (w/W)·weight_range]`` with
    ``w`` capped at ``W``; both parts lie in ``[−weight_range, weight_range]`` when ``u``
    does, and the server divides the summed vector by the summed weight as before (the
    scale ``1/W`` cancels). Measurement ``weight_capped``: rows whose weight exceeded ``W``.

    Args:
        max_weight: public bound W on a site's weight (``None``: send ``w`` itself).
        weight_range: the range the weight column is scaled into (the quantiser's clip).
    """

    max_weight: float | None = None
    weight_range: float = 1.0
    name: str = "weighted_mean"
    dp: ClassVar[str] = "unsafe"

    def __post_init__(self) -> None:
        if self.max_weight is not None and not (
            self.max_weight > 0 and np.isfinite(self.max_weight)
        ):
            raise ConfigError(f"max_weight must be > 0, got {self.max_weight}",
                              key="aggregation.max_weight")
        if not (self.weight_range > 0 and np.isfinite(self.weight_range)):
            raise ConfigError(f"weight_range must be > 0, got {self.weight_range}",
                              key="aggregation.quantize_range")

    def domain(self, upstream: Domain) -> Domain:
        """Float vectors in and out (one coordinate longer)."""
        expect(self.name, upstream, FLOAT)
        return FLOAT

    def init(self) -> None:
        """Stateless."""
        return None

    def encode(
        self, state: None, site_states: list[Any], updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """``[w·u, w]`` per row (``[(w/W)·u, (w/W)·weight_range]`` with ``max_weight``)."""
        w = np.asarray(
            ctx.weights, dtype=updates.dtype if updates.dtype.kind == "f" else np.float64
        )
        meas: dict[str, np.ndarray] = {}
        last = w
        if self.max_weight is not None:
            meas["weight_capped"] = (w > self.max_weight).astype(np.float64)
            w = (np.minimum(w, self.max_weight) / self.max_weight).astype(w.dtype)
            last = w * self.weight_range
        out = np.empty((updates.shape[0], updates.shape[1] + 1), dtype=w.dtype)
        np.multiply(updates, w[:, None], out=out[:, :-1])
        out[:, -1] = last
        return out, site_states, meas

    def decode(
        self, state: None, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[None, np.ndarray, Mapping[str, float], None]:
        """Divide the summed vector by the summed weight.

        Raises:
            AbortError: the survivors' total weight is not positive.
        """
        total_w = float(aggregate[-1])
        if self.max_weight is not None:
            total_w /= self.weight_range
        if not total_w > 0:
            raise AbortError(f"round {ctx.round}: total weight of survivors is {total_w}")
        return None, aggregate[:-1] / total_w, {"total_weight": total_w}, None


@dataclass(frozen=True)
class UniformMean(SiteStateless):
    """Unweighted mean: divide the sum by a fixed denominator (the expected cohort size when
    ``fixed_denominator`` is set — what DP needs) or by the number of survivors."""

    fixed_denominator: float | None = None
    name: str = "uniform_mean"

    def domain(self, upstream: Domain) -> Domain:
        """Float vectors in and out."""
        expect(self.name, upstream, FLOAT)
        return FLOAT

    def init(self) -> None:
        """Stateless."""
        return None

    def encode(
        self, state: None, site_states: list[Any], updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """Identity at the sites."""
        return updates, site_states, {}

    def decode(
        self, state: None, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[None, np.ndarray, Mapping[str, float], None]:
        """Divide the sum by the fixed denominator or the number of survivors."""
        denom = self.fixed_denominator or max(1, len(ctx.survivors))
        return None, aggregate / denom, {"denominator": float(denom)}, None


@dataclass(frozen=True)
class PlainSum:
    """The non-secure sum: each site sends its encoded row in the clear.

    Bytes sent per site = the row's size at its dtype (float rows are sent as float32,
    integer rows at their own width) plus a 16-byte header.
    """

    name: str = "plain_sum"
    wire_float_dtype: str = "float32"
    #: the one point at which a site can drop out: before it sends its row
    stages: ClassVar[tuple[str, ...]] = ("before_send",)

    def domain(self, upstream: Domain) -> Domain:
        """Sums float vectors or ring elements alike (not ciphertexts)."""
        if upstream.kind == "ciphertext":
            expect(self.name, upstream, FLOAT)
        return upstream

    def aggregate(
        self,
        encoded: np.ndarray,
        site_ids: np.ndarray,
        round: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> SumResult:
        """Sum the rows of the sites that did not drop before sending.

        Raises:
            AbortError: every site dropped out.
        """
        dropouts = dropouts or {}
        keep = np.asarray([int(s) not in dropouts for s in site_ids], dtype=bool)
        survivors = np.asarray(site_ids)[keep]
        if survivors.size == 0:
            raise AbortError(f"round {round}: every site dropped out before sending")
        rows = encoded if keep.all() else encoded[keep]
        if np.issubdtype(rows.dtype, np.floating):
            wire = rows.astype(self.wire_float_dtype, copy=False)
            total = np.add.reduce(wire, axis=0, dtype=np.float64)
            per_site = wire.shape[1] * wire.dtype.itemsize + 16
        else:
            total = rows.sum(axis=0, dtype=rows.dtype)
            per_site = rows.shape[1] * rows.dtype.itemsize + 16
        sent = {int(s): per_site for s in survivors}
        return SumResult(total=total, survivors=survivors, bytes_sent=sent)
