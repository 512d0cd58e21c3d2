"""An aggregate-level check: what the server *can* verify when it sees only the sum.

Under SecAgg+ (or a CKKS sum) no single update is visible, so per-update robust rules and
anomaly scores are refused; what remains is a check of the decoded aggregate. With honest
sites clipping their updates to ``‖u_i‖ ≤ C`` (``aggregation.clip_norm``), the triangle
inequality bounds the sum of ``n`` survivors by ``n·C``, so the mean the pipeline decodes
(divided by ``m`` = the cohort size or the survivors) satisfies

    ‖mean‖ ≤ C · max(1, n / m) · (1 + slack) + step · √d,

``step · √d`` allowing for the quantiser's rounding (``step`` = one quantisation level).
:class:`AggregateCheck` is the outermost stage of the chain, so its ``decode`` sees the
final mean. A round whose aggregate exceeds the bound is **refused** (``AbortError``: the
round is lost and the model stays as it was) — a site that skipped clipping and boosted
its update by more than the bound allows is caught, whoever it is. The check also tracks
the direction of the accepted model updates (an exponential moving average) and reports
the cosine of each aggregate to it; a cosine below ``min_cosine`` is flagged (measurement
``flagged_cosine``) or, with ``refuse_cosine``, refused.

What it does not stop: attackers whose updates stay within the bound (it limits their
influence to what clipping allows, ``≤ C/m`` per attacker); it cannot say *which* site
misbehaved. Under client-level DP the noise, not an attacker, dominates the aggregate's
norm: that combination is refused when the pipeline is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from veil.aggregation.base import FLOAT, DecodeContext, Domain, EncodeContext, SiteStateless, expect
from veil.errors import AbortError, ConfigError

__all__ = ["AggregateCheck", "CheckState"]


@dataclass(frozen=True)
class CheckState:
    """The check's server state.

    Attributes:
        direction: moving average of the accepted aggregates (``None`` before round 1).
        accepted: aggregates accepted so far.
    """

    direction: np.ndarray | None = None
    accepted: int = 0


@dataclass(frozen=True)
class AggregateCheck(SiteStateless):
    """Refuse an aggregate larger than the honest sites' clip bound allows.

    Args:
        clip_norm: the bound ``C`` honest sites clip their updates to.
        slack: relative head-room on the bound.
        step: one quantisation level of the secure sum (``0`` for a float sum).
        min_cosine: flag an aggregate whose cosine to the running update direction is below
            this (``None``: no direction check).
        refuse_cosine: refuse such an aggregate instead of flagging it.
        decay: weight of the past in the running direction.

    Raises:
        ConfigError: parameters out of range.
    """

    clip_norm: float
    slack: float = 0.05
    step: float = 0.0
    min_cosine: float | None = None
    refuse_cosine: bool = False
    decay: float = 0.5
    name: str = "aggregate_check"

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ConfigError(
                "the aggregate check needs aggregation.clip_norm > 0 (the bound honest sites "
                f"clip to), got {self.clip_norm}",
                key="aggregation.clip_norm",
            )
        if not (self.slack >= 0 and self.step >= 0 and 0 <= self.decay < 1):
            raise ConfigError(
                "aggregate check: slack and step must be >= 0 and decay in [0, 1)",
                key="aggregation.aggregate_check",
            )
        if self.min_cosine is not None and not -1 <= self.min_cosine <= 1:
            raise ConfigError(
                f"min_cosine must be in [-1, 1], got {self.min_cosine}",
                key="aggregation.aggregate_check",
            )

    def domain(self, upstream: Domain) -> Domain:
        """Float vectors in and out."""
        expect(self.name, upstream, FLOAT)
        return FLOAT

    def init(self) -> CheckState:
        """No direction yet."""
        return CheckState()

    def encode(
        self, state: CheckState, site_states: list[Any], updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """Identity at the sites (the check is the server's)."""
        return updates, site_states, {}

    def bound(self, n_survivors: int, cohort_size: int, dim: int) -> float:
        """The largest norm an aggregate of honest, clipped updates can have."""
        ratio = max(1.0, n_survivors / max(1, cohort_size))
        return self.clip_norm * ratio * (1.0 + self.slack) + self.step * float(np.sqrt(dim))

    def decode(
        self, state: CheckState, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[CheckState, np.ndarray, Mapping[str, float], None]:
        """Check the decoded mean; refuse it if it is over the bound.

        Measurements: ``norm``, ``bound``, ``cosine`` (to the running direction; 0 before
        one exists) and ``flagged_cosine``.

        Raises:
            AbortError: the aggregate's norm exceeds the bound (or, with ``refuse_cosine``,
                its cosine is below ``min_cosine``).
        """
        agg = np.asarray(aggregate, dtype=np.float64)
        norm = float(np.linalg.norm(agg))
        bound = self.bound(len(ctx.survivors), ctx.cohort_size, agg.size)
        if not norm <= bound:
            raise AbortError(
                f"round {ctx.round}: the aggregate's norm {norm:.4g} exceeds {bound:.4g}, the "
                f"most {len(ctx.survivors)} sites clipping to {self.clip_norm:g} can send; "
                "a site did not clip (the round is refused)"
            )
        cos = 0.0
        if state.direction is not None:
            dn = float(np.linalg.norm(state.direction))
            cos = float(agg @ state.direction / max(norm * dn, 1e-12)) if dn > 0 else 0.0
        low = (
            self.min_cosine is not None and state.direction is not None and cos < self.min_cosine
        )
        if low and self.refuse_cosine:
            raise AbortError(
                f"round {ctx.round}: the aggregate's cosine {cos:.3f} to the running update "
                f"direction is below {self.min_cosine} (the round is refused)"
            )
        direction = (
            agg.copy()
            if state.direction is None
            else self.decay * state.direction + (1.0 - self.decay) * agg
        )
        meas = {"norm": norm, "bound": bound, "cosine": cos, "flagged_cosine": float(low)}
        return CheckState(direction, state.accepted + 1), aggregate, meas, None
