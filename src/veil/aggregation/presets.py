"""Presets: functions that return chains of stages (never subclasses).

Built inside-out as TFF builds its aggregators: the summation protocol is innermost, the
quantiser wraps it, DP wraps that, clipping and the mean wrap everything; in site order the
chain reads outermost first.

* :func:`fedavg` — (clip) → weighted or uniform mean;
* :func:`dp_fedavg` — client-level DP with central noise (fixed or adaptive clip);
* :func:`for_secure_sum` — a float chain made ready for a ring summation (quantise);
* :func:`distributed_dp` — clip → fixed-denominator mean → quantise → discrete Gaussian,
  the quantiser and the noise sized together for the cohort and the ring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from veil.aggregation.base import FLOAT, Chain
from veil.aggregation.distributed_dp import DistributedDP
from veil.aggregation.dp_fedavg import AdaptiveDPFedAvg, DPFedAvg
from veil.aggregation.plain import Clip, UniformMean, WeightedMean
from veil.aggregation.quantize import Quantize
from veil.errors import ConfigError

__all__ = ["fedavg", "dp_fedavg", "for_secure_sum", "distributed_dp"]


def fedavg(
    weighted: bool = True,
    clip_norm: float | None = None,
    max_weight: float | None = None,
    weight_range: float = 1.0,
) -> Chain:
    """FedAvg's mean, optionally after an L2 clip of each update.

    Args:
        weighted: weight sites by their example count (not for DP).
        clip_norm: clip each update to this L2 norm first.
        max_weight: for a secure (ring) sum: the public bound on a site's weight, so the
            weight column, sent under the mask with the update, has a declared range
            (:class:`~veil.aggregation.plain.WeightedMean`).
        weight_range: the range the weight column is scaled into (the quantiser's clip).
    """
    stages: list[Any] = [] if clip_norm is None else [Clip(clip_norm)]
    stages.append(WeightedMean(max_weight, weight_range) if weighted else UniformMean())
    return Chain(stages)


def dp_fedavg(
    clip_norm: float,
    noise_multiplier: float,
    expected_cohort: float,
    adaptive: dict[str, Any] | None = None,
) -> Chain:
    """Client-level DP-FedAvg (central noise, fixed denominator), fixed or adaptive clip.

    Args:
        clip_norm: C (the initial C when adaptive).
        noise_multiplier: z.
        expected_cohort: m, the fixed denominator.
        adaptive: ``target_quantile``, ``lr``, ``count_stddev`` for adaptive clipping.
    """
    if adaptive is None:
        return Chain([DPFedAvg(clip_norm, noise_multiplier, expected_cohort)])
    return Chain([AdaptiveDPFedAvg(clip_norm, noise_multiplier, expected_cohort, **adaptive)])


def for_secure_sum(chain: Chain | Sequence[Any], bits: int, quantize_range: float) -> Chain:
    """``chain`` followed by the quantiser a ring summation needs (if it ends in floats)."""
    c = chain if isinstance(chain, Chain) else Chain(chain)
    if c.output != FLOAT:
        return c
    return Chain([*c.stages, Quantize(clip=quantize_range, bits=bits)])


def distributed_dp(
    clip_norm: float,
    noise_multiplier: float,
    cohort: int,
    dim: int,
    bits: int,
    quantize_range: float,
    expected_dropout: float = 0.0,
    margin: float = 2.0,
    corrupt_fraction: float = 0.0,
) -> Chain:
    """Distributed DP under a secure sum, sized together (Kairouz, Liu & Steinke 2021).

    The quantiser's levels are sized for exactly ``cohort`` sites and its margin is
    doubled until the summed noise (12 standard deviations) fits in the ring.

    Raises:
        ConfigError: the noise cannot fit in a ``bits``-bit ring.
    """
    n = max(1, int(cohort))
    for _ in range(40):
        q = Quantize(clip=quantize_range, bits=bits, margin=margin, cohort_bound=n)
        noise = DistributedDP.after(
            q, n, clip_norm, noise_multiplier, expected_dropout, corrupt_fraction
        )
        if noise.fits(n, dim):
            return Chain([Clip(clip_norm), UniformMean(fixed_denominator=float(n)), q, noise])
        margin *= 2
    raise ConfigError(
        "the distributed DP noise does not fit in the secure-aggregation ring; raise "
        "aggregation.bits",
        key="aggregation.bits",
    )
