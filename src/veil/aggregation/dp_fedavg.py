"""Client-level differential privacy for federated averaging (DP-FedAvg).

Two :class:`~veil.aggregation.base.Transform` stages; each replaces the (weighted) mean
stage of a pipeline and reports the :class:`dp_accounting.DpEvent` it spends per round:

* :class:`DPFedAvg` (McMahan et al. 2018): every site clips its update to L2 norm ``C``;
  the server adds ``N(0, (z C)²)`` to the sum and divides by the *expected* cohort size
  ``m`` (a fixed denominator: the number of survivors is not private under Poisson
  sampling of sites). DP event per round: ``Gaussian(z)``.
* :class:`AdaptiveDPFedAvg` (Andrew et al. 2021, "Differentially Private Learning with
  Adaptive Clipping"): as above, and each site appends one coordinate
  ``b_i - 1/2`` where ``b_i = 1[‖Δ_i‖ ≤ C]``. The appended column is summed by the same
  summation protocol (so SecAgg hides the individual bits); the server adds
  ``N(0, σ_b²)`` to it, estimates the unclipped fraction
  ``b̂ = (Σ(b_i - 1/2) + noise) / m + 1/2`` and updates ``C ← C · exp(-η (b̂ - γ))``.
  The column has sensitivity 1/2, so its mechanism is ``Gaussian(σ_b / (1/2))``; the
  round's event is ``Composed([Gaussian(z), Gaussian(2 σ_b)])``.

Sites are weighted equally (weighting by example count would raise the sensitivity).
Sampling of sites is accounted by the ledger (:mod:`veil.privacy.ledger`), which wraps
these events in the runtime's sampling scheme. Encode reports no per-site measurements:
the clipped fraction of an individual round is not private; only the noised estimate
``b̂`` is reported.

The noise comes from ``DecodeContext.rng`` (a :class:`veil.crypto.prg.SecureRng`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from dp_accounting import dp_event as dpe

from veil.aggregation.base import (
    FLOAT,
    DecodeContext,
    Domain,
    EncodeContext,
    SiteStateless,
    expect,
)
from veil.aggregation.plain import l2_clip
from veil.errors import ConfigError, LocalError

__all__ = ["DPFedAvgState", "DPFedAvg", "AdaptiveDPFedAvg"]


def _clip(updates: np.ndarray, clip_norm: float) -> tuple[np.ndarray, np.ndarray]:
    clipped, norms, _ = l2_clip(np.asarray(updates, dtype=np.float64), clip_norm)
    return clipped, norms


class _FloatMechanism(SiteStateless):
    """A client-level DP stage: float vectors in and out, spends privacy each round."""

    dp: ClassVar[str] = "mechanism"
    name: str

    def domain(self, upstream: Domain) -> Domain:
        """Float vectors in and out."""
        expect(self.name, upstream, FLOAT)
        return FLOAT


@dataclass(frozen=True)
class DPFedAvgState:
    """Server state of a DP-FedAvg stage (broadcast to sites each round).

    Attributes:
        clip_norm: the clip bound C of the coming round.
    """

    clip_norm: float


def _check_common(noise_multiplier: float, expected_cohort: float, clip_norm: float) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ConfigError(
            f"must be a finite number >= 0, got {noise_multiplier}",
            key="privacy.client_level.noise_multiplier",
        )
    if not expected_cohort > 0:
        raise ConfigError(
            f"expected cohort size must be > 0, got {expected_cohort}", key="federation"
        )
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"must be > 0, got {clip_norm}", key="privacy.client_level.clip_norm")


def _noise(ctx: DecodeContext, n: int, std: float) -> np.ndarray:
    if std == 0:
        return np.zeros(n)
    if ctx.rng is None:
        raise LocalError(
            "client-level DP needs server privacy randomness: pass a SecureRng as server_rng "
            "(SecureRng.fresh() in real runs)"
        )
    return np.asarray(ctx.rng.normal(n, std), dtype=np.float64)


@dataclass(frozen=True)
class DPFedAvg(_FloatMechanism):
    """Fixed-clip DP-FedAvg: clip each update, Gaussian noise on the sum, fixed mean.

    Args:
        clip_norm: L2 bound C on each site's update.
        noise_multiplier: z; the noise std on the sum is ``z * C``.
        expected_cohort: m, the expected number of sites per round (the denominator).

    Raises:
        ConfigError: negative or non-finite parameters.
    """

    clip_norm: float
    noise_multiplier: float
    expected_cohort: float
    name: str = "dp_fedavg"

    def __post_init__(self) -> None:
        _check_common(self.noise_multiplier, self.expected_cohort, self.clip_norm)

    def round_event(self) -> dpe.DpEvent:
        """The DP event every round spends (before site-sampling amplification)."""
        return dpe.GaussianDpEvent(float(self.noise_multiplier))

    def init(self) -> DPFedAvgState:
        """Initial state: the configured clip norm."""
        return DPFedAvgState(float(self.clip_norm))

    def encode(
        self,
        state: DPFedAvgState,
        site_states: list[Any],
        updates: np.ndarray,
        ctx: EncodeContext,
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """Clip every site's update (row-wise) to ``state.clip_norm``."""
        clipped, _ = _clip(updates, state.clip_norm)
        return clipped, site_states, {}

    def decode(
        self, state: DPFedAvgState, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[DPFedAvgState, np.ndarray, Mapping[str, float], Any]:
        """Add ``N(0, (zC)²)`` to the sum and divide by the expected cohort size.

        Raises:
            LocalError: noise is needed and ``ctx.rng`` is missing.
        """
        total = np.asarray(aggregate, dtype=np.float64)
        std = self.noise_multiplier * state.clip_norm
        mean = (total + _noise(ctx, total.shape[0], std)) / self.expected_cohort
        meas = {"clip_norm": state.clip_norm, "noise_std": std}
        return state, mean, meas, self.round_event()


@dataclass(frozen=True)
class AdaptiveDPFedAvg(_FloatMechanism):
    """DP-FedAvg whose clip norm tracks a quantile of the update norms, privately.

    Args:
        initial_clip: C at round 0.
        noise_multiplier: z for the updates (std ``z * C`` on the sum).
        expected_cohort: m, expected sites per round (denominator of both means).
        target_quantile: γ, the fraction of updates that should stay unclipped.
        lr: η, learning rate of the geometric clip update.
        count_stddev: σ_b, noise std on the summed indicator column (default ``m / 20``).

    Raises:
        ConfigError: parameters out of range.
    """

    initial_clip: float
    noise_multiplier: float
    expected_cohort: float
    target_quantile: float = 0.5
    lr: float = 0.2
    count_stddev: float | None = None
    name: str = "adaptive_dp_fedavg"

    def __post_init__(self) -> None:
        _check_common(self.noise_multiplier, self.expected_cohort, self.initial_clip)
        if not 0.0 < self.target_quantile < 1.0:
            raise ConfigError(
                f"must be in (0, 1), got {self.target_quantile}",
                key="privacy.client_level.adaptive.target_quantile",
            )
        if not self.lr > 0:
            raise ConfigError(f"must be > 0, got {self.lr}", key="privacy.client_level.adaptive.lr")
        if self.count_stddev is not None and not self.count_stddev > 0:
            raise ConfigError(
                f"must be > 0, got {self.count_stddev}",
                key="privacy.client_level.adaptive.count_stddev",
            )

    @property
    def count_std(self) -> float:
        """σ_b actually used (``count_stddev`` or ``expected_cohort / 20``)."""
        return float(
            self.count_stddev if self.count_stddev is not None else self.expected_cohort / 20
        )

    def round_event(self) -> dpe.DpEvent:
        """Updates (sensitivity C) and unclipped count (sensitivity 1/2), composed."""
        return dpe.ComposedDpEvent(
            [
                dpe.GaussianDpEvent(float(self.noise_multiplier)),
                dpe.GaussianDpEvent(self.count_std / 0.5),
            ]
        )

    def init(self) -> DPFedAvgState:
        """Initial state: the initial clip norm."""
        return DPFedAvgState(float(self.initial_clip))

    def encode(
        self,
        state: DPFedAvgState,
        site_states: list[Any],
        updates: np.ndarray,
        ctx: EncodeContext,
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """Clip each row to C and append ``1[‖Δ_i‖ ≤ C] - 1/2`` as a last column."""
        clipped, norms = _clip(updates, state.clip_norm)
        indicator = (norms <= state.clip_norm).astype(np.float64) - 0.5
        return np.concatenate([clipped, indicator[:, None]], axis=1), site_states, {}

    def decode(
        self, state: DPFedAvgState, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[DPFedAvgState, np.ndarray, Mapping[str, float], Any]:
        """Noise the sum and the count, return the mean, update the clip norm.

        Raises:
            LocalError: ``ctx.rng`` is missing.
        """
        total = np.asarray(aggregate, dtype=np.float64)
        d = total.shape[0] - 1
        m = self.expected_cohort
        std = self.noise_multiplier * state.clip_norm
        noise = _noise(ctx, d + 1, 1.0)
        mean = (total[:d] + std * noise[:d]) / m
        frac = float((total[d] + self.count_std * noise[d]) / m + 0.5)
        new_clip = float(state.clip_norm * math.exp(-self.lr * (frac - self.target_quantile)))
        meas = {
            "clip_norm": state.clip_norm,
            "noise_std": std,
            "unclipped_fraction_noised": frac,
            "next_clip_norm": new_clip,
        }
        return DPFedAvgState(new_clip), mean, meas, self.round_event()
