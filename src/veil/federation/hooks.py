"""Hooks: how the privacy ledger, audits and reports join a federated run.

A hook sees the run at four points. The ledger uses ``before_run`` to refuse an
over-budget plan, ``before_round`` to stop cleanly when the next round would exceed the
budget, and ``after_round`` to record what the round spent. Hooks must be deterministic
given the run's seed (resume replays nothing: a resumed run restores each hook's state
from :meth:`RunHook.state_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["RoundInfo", "RunHook", "RoundPlan"]


@dataclass(frozen=True)
class RoundPlan:
    """What the runtime knows about the run before it starts.

    Attributes:
        rounds: total rounds planned.
        n_sites: sites in the federation.
        cohort_size: sites sampled per round (expected size when sampling by fraction).
        sampling: ``"fixed"`` (uniform without replacement) or ``"poisson"`` (each site
            independently with probability ``cohort_size / n_sites``).
        site_sizes: examples held by each site.
        local_steps: local SGD steps per round at each site (array, per site).
    """

    rounds: int
    n_sites: int
    cohort_size: float
    sampling: str
    site_sizes: np.ndarray
    local_steps: np.ndarray


@dataclass
class RoundInfo:
    """One finished round, as hooks see it (before the record is written).

    Attributes:
        round: zero-based round number.
        cohort: ids of the sites selected this round.
        survivors: ids whose update reached the aggregate.
        dp_events: DP events the aggregation pipeline reported this round.
        measurements: numbers for the record; hooks may add keys (prefix them).
    """

    round: int
    cohort: np.ndarray
    survivors: np.ndarray
    dp_events: tuple[Any, ...]
    measurements: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class RunHook(Protocol):
    """Something that follows a run round by round. All methods are optional to override
    in :class:`veil.federation.BaseHook`; the runtime calls them in order."""

    name: str

    def before_run(self, plan: RoundPlan) -> None:
        """Called once before round 0 (and on resume). May raise BudgetExceededError."""

    def before_round(self, round: int) -> str | None:
        """Return a reason string to stop the run cleanly before this round, else None."""

    def after_round(self, info: RoundInfo) -> Mapping[str, Any]:
        """Called after each round; returns values to store in the round's record."""

    def summary(self) -> Mapping[str, Any]:
        """Values for the final record and summary table."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state for checkpoints."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` when resuming."""


class BaseHook:
    """A hook that does nothing; subclass and override what you need."""

    name = "hook"

    def before_run(self, plan: RoundPlan) -> None:  # noqa: D102
        return None

    def before_round(self, round: int) -> str | None:  # noqa: D102
        return None

    def after_round(self, info: RoundInfo) -> Mapping[str, Any]:  # noqa: D102
        return {}

    def summary(self) -> Mapping[str, Any]:  # noqa: D102
        return {}

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: D102
        return None
