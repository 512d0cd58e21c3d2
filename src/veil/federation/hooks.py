"""Hooks: how the privacy ledger, audits and reports join a federated run.

A hook sees the run at four points. The ledger uses ``before_run`` to refuse an
over-budget plan, ``before_round`` to stop cleanly when the next round would exceed the
budget, and ``after_round`` to record what the round spent. Hooks must be deterministic
given the run's seed (resume replays nothing: a resumed run restores each hook's state
from :meth:`RunHook.state_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from veil.privacy.plan import RoundInfo, RoundPlan

__all__ = ["RoundInfo", "RunHook", "RoundPlan", "BaseHook"]


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
