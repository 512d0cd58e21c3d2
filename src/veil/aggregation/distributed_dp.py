"""Distributed DP: each site adds discrete Gaussian noise on the integer grid.

Placed after :class:`~veil.aggregation.quantize.Quantize` and before the secure sum, each
site adds N_Z(0, σ²) to every integer coordinate, with

    σ = z · Δ₂ / √m,   Δ₂ = s · C + √d,   m = ⌊n · (1 − expected_dropout)⌋,

where C is the L2 clip applied upstream (a ``Clip`` stage before quantisation), s the
quantiser's scale and d the dimension (the stage holds s and the ring's head-room as
numbers: :meth:`DistributedDP.after` sizes it from the :class:`Quantize` before it, and
:func:`veil.aggregation.presets.distributed_dp` builds the whole chain): after stochastic rounding an update of L2 norm ≤ C
has integer norm ≤ sC + √d (each coordinate moves by < 1). The sum of m' survivors'
noise gives the server (which only sees the sum) the *distributed discrete Gaussian*
mechanism of Kairouz, Liu & Steinke (ICML 2021, Theorem 14), which is ½ε²-zCDP with

    ε = min{ √(Δ₂²/(m'σ²) + ½τd),  Δ₂/(√m' σ) + τ√d },
    τ = 10 Σ_{k=1}^{m'−1} exp(−2π²σ² · k/(k+1)).

dp_accounting 0.6 has no discrete-Gaussian event, so :meth:`DistributedDP.decode` returns
``ZCDpEvent(rho=ε²/2)`` computed for the *actual* survivors m' (fewer survivors than
expected ⇒ less noise ⇒ a larger ρ is reported, never hidden). As σ grows τ → 0 and ρ →
1/(2z²)·(m/m'), the continuous Gaussian's zCDP. Assumptions: honest sites add their noise
(the noise of the ``corrupt_fraction`` of sites that may collude with the server is not
counted: σ is sized for ⌊n(1 − dropout)⌋ − ⌈corrupt·n⌉ honest survivors and each round is
charged for its survivors minus ⌈corrupt·n⌉; σ ≥ 1/2 is checked), the
noise sampler uses floating-point acceptance probabilities (Canonne, Kamath & Steinke 2020,
Alg. 3, vectorised), and the integer sum never wraps (checked against the quantiser's
head-room at 12σ, wrap probability < 10⁻³² per coordinate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import dp_accounting
import numpy as np

from veil.aggregation.base import (
    DecodeContext,
    Domain,
    EncodeContext,
    SiteStateless,
    expect,
    ring,
)
from veil.aggregation.quantize import Quantize
from veil.errors import ConfigError, InsecureParametersError, LocalError

__all__ = ["DistributedDP", "check_sigma", "ddg_epsilon", "discrete_gaussian", "honest_survivors"]


def discrete_gaussian(sigma: float, shape: int | tuple[int, ...], rng: Any) -> np.ndarray:
    """Samples of N_Z(0, σ²) (P(x) ∝ exp(−x²/2σ²)) from a CSPRNG, as int64.

    Discrete Laplace proposals with scale t = ⌊σ⌋ + 1 accepted with probability
    exp(−(|y| − σ²/t)²/(2σ²)) (Canonne, Kamath & Steinke 2020), vectorised.

    Raises:
        LocalError: if sigma is negative or ``rng`` is missing.
    """
    if rng is None or not sigma >= 0:
        raise LocalError("discrete_gaussian needs sigma ≥ 0 and a SecureRng")
    n = int(np.prod(shape))
    if sigma == 0 or n == 0:
        return np.zeros(shape, dtype=np.int64)
    t = math.floor(sigma) + 1
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        m = max(64, int(1.6 * (n - have)))
        g = np.floor(-t * np.log(rng.uniform((2, m)))).astype(np.int64)
        y = g[0] - g[1]
        acc = rng.uniform(m) < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        out.append(y[acc])
        have += int(acc.sum())
    return np.concatenate(out)[:n].reshape(shape)


def honest_survivors(cohort: int, expected_dropout: float, corrupt_fraction: float) -> int:
    """Sites whose noise may be counted: ``⌊n (1 − dropout)⌋ − ⌈corrupt · n⌉``.

    Sites the SecAgg threat model lets collude with the server (``corrupt · n``) know their
    own noise, so it does not protect anyone against that coalition.

    Raises:
        ConfigError: fractions outside [0, 1), or no honest survivor remains.
    """
    n = max(1, int(cohort))
    if not (0.0 <= expected_dropout < 1.0 and 0.0 <= corrupt_fraction < 1.0):
        raise ConfigError(
            "expected_dropout and corrupt_fraction must be in [0, 1)", key="aggregation"
        )
    m = math.floor(n * (1.0 - expected_dropout)) - math.ceil(corrupt_fraction * n - 1e-12)
    if m < 1:
        raise ConfigError(
            f"a cohort of {n} with expected_dropout {expected_dropout} and corrupt_fraction "
            f"{corrupt_fraction} leaves no honest survivor to add noise; raise the cohort",
            key="aggregation.corrupt_fraction",
        )
    return int(m)


def check_sigma(sigma: float) -> None:
    """The bound of :func:`ddg_epsilon` needs σ ≥ 1/2 per site (KLS21, Thm 14).

    Raises:
        InsecureParametersError: ``sigma < 0.5``.
    """
    if not (math.isfinite(sigma) and sigma >= 0.5):
        raise InsecureParametersError(
            f"per-site discrete Gaussian σ = {sigma:.4g} < 1/2: the distributed DP bound does "
            "not hold; raise privacy.client_level.noise_multiplier or aggregation.bits, or "
            "use a smaller cohort",
            key="privacy.client_level.noise_multiplier",
        )


def ddg_epsilon(l2_sensitivity: float, sigma: float, survivors: int, dim: int) -> float:
    """ε of the ½ε²-zCDP bound of the distributed discrete Gaussian (KLS21, Thm 14).

    ``inf`` (not private) when the theorem's precondition σ ≥ 1/2 fails.
    """
    if survivors < 1 or not sigma >= 0.5:
        return math.inf
    tau = 10 * sum(
        math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, survivors)
    )
    var = survivors * sigma**2
    e1 = math.sqrt(l2_sensitivity**2 / var + 0.5 * tau * dim)
    e2 = l2_sensitivity / math.sqrt(var) + tau * math.sqrt(dim)
    return min(e1, e2)


@dataclass(frozen=True)
class DistributedDP(SiteStateless):
    """Per-site discrete Gaussian noise sized for the expected survivors.

    Args:
        bits: the ring Z_2^bits of the quantised rows.
        scale: s, integer units per float unit of the quantiser before this stage.
        headroom: the largest |integer| the sum may reach beyond the signal.
        l2_clip: L2 norm bound C of each update before quantisation (clip upstream).
        noise_multiplier: z (central-equivalent noise std / sensitivity).
        expected_dropout: fraction of the cohort expected to drop before the sum.
        corrupt_fraction: fraction of the cohort that may collude with the server; their
            noise is not counted (:func:`honest_survivors`).
    """

    bits: int
    scale: float
    headroom: int
    l2_clip: float
    noise_multiplier: float
    expected_dropout: float = 0.0
    corrupt_fraction: float = 0.0
    name: str = "distributed_dp"
    dp: ClassVar[str] = "mechanism"

    def __post_init__(self) -> None:
        if not self.l2_clip > 0 or not self.noise_multiplier > 0:
            raise ConfigError("l2_clip and noise_multiplier must be positive", key=self.name)
        if not 0 <= self.expected_dropout < 1 or not 0 <= self.corrupt_fraction < 1:
            raise ConfigError(
                "expected_dropout and corrupt_fraction must be in [0, 1)", key=self.name
            )
        if not (self.scale > 0 and self.headroom >= 0):
            raise ConfigError("scale must be > 0 and headroom >= 0", key=self.name)

    @classmethod
    def after(
        cls,
        quantizer: Quantize,
        cohort: int,
        l2_clip: float,
        noise_multiplier: float,
        expected_dropout: float = 0.0,
        corrupt_fraction: float = 0.0,
    ) -> DistributedDP:
        """The noise stage sized for ``quantizer`` summing at most ``cohort`` sites."""
        n = quantizer.sites_bound(cohort)
        return cls(
            quantizer.bits, quantizer.scale(n), quantizer.headroom(n), l2_clip,
            noise_multiplier, expected_dropout, corrupt_fraction,
        )

    def domain(self, upstream: Domain) -> Domain:
        """Z_2^bits in and out (after a Quantize of the same bits)."""
        expect(self.name, upstream, ring(self.bits))
        return upstream

    def init(self) -> None:
        """Stateless."""
        return None

    def site_sigma(self, cohort_size: int, dim: int) -> tuple[float, float]:
        """(σ per site on the integer grid, Δ₂ on the integer grid), sized for the honest
        expected survivors (:func:`honest_survivors`)."""
        n = max(1, cohort_size)
        delta = self.scale * self.l2_clip + math.sqrt(dim)
        m = honest_survivors(n, self.expected_dropout, self.corrupt_fraction)
        return self.noise_multiplier * delta / math.sqrt(m), delta

    def fits(self, cohort_size: int, dim: int) -> bool:
        """Whether the summed noise (12 standard deviations) fits in the head-room."""
        sigma, _ = self.site_sigma(cohort_size, dim)
        return 12 * sigma * math.sqrt(max(1, cohort_size)) <= self.headroom

    def encode(
        self, state: None, site_states: list[Any], updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """Add N_Z(0, σ²) to each integer row, from that site's own stream.

        Raises:
            LocalError: rows are not integers, exceed the sensitivity bound, or a row has
                no privacy stream.
            ConfigError: the noise would not fit in the quantiser's head-room.
        """
        x = np.asarray(updates)
        if not np.issubdtype(x.dtype, np.integer):
            raise LocalError("DistributedDP expects integer rows: place it after Quantize")
        n = ctx.cohort_size or x.shape[0]
        sigma, delta = self.site_sigma(n, x.shape[1])
        norms = np.linalg.norm(x.astype(np.float64), axis=1)
        if np.any(norms > delta * (1 + 1e-9)):
            raise LocalError("an update exceeds the L2 bound s·C + √d: clip before quantising")
        if not self.fits(n, x.shape[1]):
            raise ConfigError(
                "DP noise does not fit in the ring's head-room; raise Quantize.bits or margin",
                key=self.name,
            )
        check_sigma(sigma)
        out = x.astype(np.int64)
        for i in range(x.shape[0]):
            rng = ctx.row_rng(i, "DistributedDP (discrete Gaussian noise)")
            out[i] += discrete_gaussian(sigma, x.shape[1], rng)
        return out, site_states, {"noise_std_int": np.full(x.shape[0], sigma)}

    def decode(
        self, state: None, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[None, np.ndarray, Mapping[str, float], Any]:
        """Pass the sum through; report the zCDP event for the actual survivors."""
        d = int(np.asarray(aggregate).shape[0])
        n = ctx.cohort_size or len(ctx.survivors)
        sigma, delta = self.site_sigma(n, d)
        # the survivors' noise, minus what the tolerated corrupt sites added (known to them)
        m = len(ctx.survivors) - math.ceil(self.corrupt_fraction * max(1, n) - 1e-12)
        eps = ddg_epsilon(delta, sigma, m, d)
        event = dp_accounting.ZCDpEvent(eps**2 / 2) if math.isfinite(eps) else (
            dp_accounting.NonPrivateDpEvent()
        )
        meas = {
            "noise_std_int": sigma * math.sqrt(max(m, 0)),
            "effective_noise_multiplier": sigma * math.sqrt(max(m, 0)) / delta,
            "rho": eps**2 / 2 if math.isfinite(eps) else math.inf,
        }
        return None, aggregate, meas, event
