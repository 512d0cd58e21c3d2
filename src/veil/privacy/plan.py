"""What the run's schedule looks like before it starts, and what one round did.

The privacy layer vets a :class:`RoundPlan` before a run (budget, δ) and charges each
:class:`RoundInfo`'s DP events; the federation layer produces both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RoundPlan", "RoundInfo"]


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
