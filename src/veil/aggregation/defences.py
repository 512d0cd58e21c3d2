"""Assemble a pipeline with the defences against bad sites that its summation allows.

* plaintext summation: a robust rule in place of the sum (:mod:`veil.aggregation.robust`),
  per-update anomaly scores and a norm bound (:mod:`veil.aggregation.anomaly`);
* secure summation (SecAgg+, CKKS): those are refused with a :class:`ConfigError` naming
  what works there — clipping at honest sites, the aggregate-level check
  (:mod:`veil.aggregation.aggregate_check`) and the malicious-secure SecAgg+.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from veil.aggregation.aggregate_check import AggregateCheck
from veil.aggregation.anomaly import SECURE_SUMMATIONS, ScreenedSum
from veil.aggregation.base import Chain, Pipeline
from veil.aggregation.plain import PlainSum, UniformMean, WeightedMean
from veil.aggregation.robust import RobustSum, secure_refusal
from veil.errors import ConfigError

__all__ = ["Defences", "defended_pipeline", "check_defences"]


@dataclass(frozen=True)
class Defences:
    """Which defences a run asks for (the ``aggregation.*`` keys of the same names).

    Attributes:
        robust: ``"none"``, ``"median"``, ``"trimmed_mean"`` or ``"multi_krum"``.
        trim_fraction: β of the trimmed mean.
        krum_f: Byzantine sites multi-Krum tolerates (``None``: the most it allows).
        krum_m: updates multi-Krum averages (``None``: ``n − f``).
        anomaly: score every update and record the flagged sites.
        anomaly_threshold: robust z-score beyond which an update is flagged.
        anomaly_drop: leave flagged updates out of the sum.
        norm_bound: leave updates with a larger L2 norm out (server side).
        aggregate_check: refuse an aggregate larger than the clip bound allows.
        clip_norm: the clip bound of honest sites (needed by ``aggregate_check``).
        step: one quantisation level of the secure sum (for ``aggregate_check``).
    """

    robust: str = "none"
    trim_fraction: float = 0.1
    krum_f: int | None = None
    krum_m: int | None = None
    anomaly: bool = False
    anomaly_threshold: float = 3.5
    anomaly_drop: bool = False
    norm_bound: float | None = None
    aggregate_check: bool = False
    clip_norm: float | None = None
    step: float = 0.0

    @property
    def per_update(self) -> list[str]:
        """The per-update defences asked for, as config keys."""
        out = []
        if self.robust != "none":
            out.append(f"aggregation.robust = {self.robust!r}")
        if self.anomaly:
            out.append("aggregation.anomaly = true")
        if self.norm_bound is not None:
            out.append("aggregation.norm_bound")
        return out

    @property
    def any(self) -> bool:
        """Whether any defence is asked for."""
        return bool(self.per_update) or self.aggregate_check


def check_defences(d: Defences, summation: str, client_dp: bool, cohort: float) -> None:
    """Refuse defences that cannot work with this summation, DP setting or cohort.

    Raises:
        ConfigError: a per-update defence under a secure summation (the message says what
            works there), a defence that does not go with client-level DP, an aggregate
            check without a clip bound, or a multi-Krum ``f`` the cohort cannot carry.
    """
    if d.per_update and summation in SECURE_SUMMATIONS:
        key = "aggregation.robust" if d.robust != "none" else (
            "aggregation.anomaly" if d.anomaly else "aggregation.norm_bound"
        )
        raise ConfigError(secure_refusal(" and ".join(d.per_update), summation), key=key)
    if client_dp and d.any:
        raise ConfigError(
            "robust rules, anomaly scores and the aggregate check do not go with client-level "
            "DP: the noise is sized for a plain sum, and which site is flagged depends on its "
            "update outside the mechanism; DP-FedAvg's clipping already bounds each site "
            "(use sample-level DP with these defences)",
            key="aggregation.robust",
        )
    if d.aggregate_check and d.clip_norm is None:
        raise ConfigError(
            "aggregation.aggregate_check needs aggregation.clip_norm (the bound honest sites "
            "clip to, from which the aggregate's bound follows)",
            key="aggregation.aggregate_check",
        )
    if d.anomaly_drop and not d.anomaly:
        raise ConfigError(
            "aggregation.anomaly_drop needs aggregation.anomaly = true", key="aggregation.anomaly"
        )
    if d.robust == "multi_krum" and d.krum_f is not None and cohort <= 2 * d.krum_f + 2:
        raise ConfigError(
            f"multi-Krum with krum_f = {d.krum_f} needs a cohort above {2 * d.krum_f + 2} "
            f"sites, got {cohort:g}; lower aggregation.krum_f or raise the cohort",
            key="aggregation.krum_f",
        )
    if d.robust == "multi_krum" and d.krum_m is not None and d.krum_m > cohort:
        raise ConfigError(
            f"aggregation.krum_m ({d.krum_m}) is larger than the cohort ({cohort:g})",
            key="aggregation.krum_m",
        )


def defended_pipeline(chain: Chain, summation: Any, d: Defences) -> Pipeline:
    """``Pipeline(chain, summation)`` with the defences of ``d`` put in.

    A robust rule replaces the plain sum and the chain's mean stage (the rule returns a
    mean); the anomaly screen wraps the (robust or plain) sum; the aggregate check is the
    outermost stage (its decode sees the final mean).

    Raises:
        ConfigError: see :func:`check_defences` (a secure summation refuses the per-update
            defences at construction).
    """
    name = str(getattr(summation, "name", ""))
    check_defences(d, name if name in SECURE_SUMMATIONS else "plain", chain.dp == "mechanism",
                   float("inf"))
    if d.per_update and not isinstance(summation, PlainSum):
        raise ConfigError(
            f"{' and '.join(d.per_update)} screen(s) the updates of a plain sum, not of "
            f"summation {name!r} (e.g. compressed payloads or a tiered sum); use them with "
            "the plain sum alone",
            key="aggregation.robust" if d.robust != "none" else "aggregation.anomaly",
        )
    stages = list(chain.stages)
    if d.robust != "none":
        stages = [t for t in stages if not isinstance(t, (WeightedMean, UniformMean))]
        summation = RobustSum(d.robust, d.trim_fraction, d.krum_f, d.krum_m)
    if d.anomaly or d.norm_bound is not None:
        weighted = bool(stages) and isinstance(stages[-1], WeightedMean)
        summation = ScreenedSum(
            summation,
            threshold=d.anomaly_threshold if d.anomaly else float("inf"),
            drop=d.anomaly_drop,
            norm_bound=d.norm_bound,
            weight_column=weighted,
        )
    if d.aggregate_check:
        stages.insert(0, AggregateCheck(float(d.clip_norm), step=d.step))  # type: ignore[arg-type]
    return Pipeline(Chain(stages, chain.upstream), summation)
