"""The privacy ledger: DP events per protected entity, composed with dp-accounting.

An *entity* is whatever one guarantee protects: ``"federation"`` for client-level DP (one
site's whole data), ``"site:<id>"`` for sample-level DP (one example of that site). The
ledger keeps each entity's events and answers ε(δ) from a dp-accounting accountant that
composed exactly those events — it evaluates no formula of its own.

Entities with the same multiset of events share one accountant (composition is
commutative), so thousands of sites with the same DP-SGD schedule cost a handful of
accountants. A checkpoint stores the events (JSON) and replays them on load.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from typing import Any

from dp_accounting import dp_event as dpe

from veil.errors import LocalError
from veil.privacy.accounting import event_from_json, event_to_json, make_accountant

__all__ = ["PrivacyLedger"]

_Key = tuple[tuple[int, int], ...]


class PrivacyLedger:
    """Per-entity DP events and their ε(δ) via dp-accounting.

    Args:
        delta: δ at which ε is reported.
        accountant: ``"rdp"`` or ``"pld"``.

    Example:
        >>> from dp_accounting import GaussianDpEvent
        >>> led = PrivacyLedger(delta=1e-5, accountant="rdp")
        >>> led.spend("federation", GaussianDpEvent(1.0))
        >>> round(led.epsilon("federation"), 2) > 0
        True
    """

    def __init__(self, delta: float, accountant: str = "rdp") -> None:
        if not 0 < delta < 1:
            raise LocalError(f"delta must be in (0, 1), got {delta}")
        make_accountant(accountant)  # validates the name
        self.delta = float(delta)
        self.kind = accountant
        self._events: list[dpe.DpEvent] = []
        self._ids: dict[str, int] = {}
        self._by_obj: dict[int, int] = {}  # id(event) -> event id (events are kept alive)
        self._acc: dict[_Key, Any] = {(): make_accountant(accountant)}
        self._eps: dict[_Key, float] = {(): 0.0}
        self._who: dict[str, _Key] = {}
        self._log: dict[str, list[list[int]]] = {}  # entity -> run-length [[event id, count]]

    # -- spending --------------------------------------------------------------------------
    def _intern(self, event: dpe.DpEvent) -> int:
        hit = self._by_obj.get(id(event))
        if hit is not None and self._events[hit] is event:
            return hit
        if not isinstance(event, dpe.DpEvent):
            raise LocalError(f"not a dp_accounting DpEvent: {type(event).__name__}")
        s = json.dumps(event_to_json(event), sort_keys=True)
        if s not in self._ids:
            self._ids[s] = len(self._events)
            self._events.append(event)
        eid = self._ids[s]
        if self._events[eid] is event:
            self._by_obj[id(event)] = eid
        return eid

    def _child(self, key: _Key, eid: int) -> _Key:
        counts = dict(key)
        counts[eid] = counts.get(eid, 0) + 1
        new = tuple(sorted(counts.items()))
        if new not in self._acc:
            acc = copy.deepcopy(self._acc[key])
            acc.compose(self._events[eid])
            self._acc[new] = acc
        return new

    def spend(self, entity: str, event: dpe.DpEvent) -> None:
        """Record that ``entity`` spent ``event`` (composed after its earlier events)."""
        eid = self._intern(event)
        self._who[entity] = self._child(self._who.get(entity, ()), eid)
        runs = self._log.setdefault(entity, [])
        if runs and runs[-1][0] == eid:
            runs[-1][1] += 1
        else:
            runs.append([eid, 1])

    def prune(self) -> None:
        """Forget accountants no entity uses any more (call once per round)."""
        keep = set(self._who.values()) | {()}
        self._acc = {k: v for k, v in self._acc.items() if k in keep}
        self._eps = {k: v for k, v in self._eps.items() if k in keep}

    # -- queries ---------------------------------------------------------------------------
    def _epsilon_of(self, key: _Key) -> float:
        if key not in self._eps:
            e = float(self._acc[key].get_epsilon(self.delta))
            self._eps[key] = math.inf if math.isnan(e) else e
        return self._eps[key]

    def epsilon(self, entity: str) -> float:
        """ε(δ) spent so far by ``entity`` (0 if it spent nothing)."""
        return self._epsilon_of(self._who.get(entity, ()))

    def epsilon_if(self, entity: str, event: dpe.DpEvent) -> float:
        """ε(δ) ``entity`` would have after also spending ``event`` (nothing is recorded)."""
        return self._epsilon_of(self._child(self._who.get(entity, ()), self._intern(event)))

    def entities(self) -> list[str]:
        """Entities that spent anything, in first-spend order."""
        return list(self._log)

    def events(self, entity: str) -> list[dpe.DpEvent]:
        """``entity``'s events in the order they were spent."""
        return [self._events[i] for i, c in self._log.get(entity, []) for _ in range(c)]

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the distinct events and each entity's run-length log."""
        return {
            "delta": self.delta,
            "accountant": self.kind,
            "events": [event_to_json(e) for e in self._events],
            "log": {k: [list(r) for r in v] for k, v in self._log.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replay a :meth:`state_dict` into this (fresh) ledger.

        Raises:
            LocalError: the state was written with another δ or accountant.
        """
        if float(state["delta"]) != self.delta or state["accountant"] != self.kind:
            raise LocalError(
                "privacy ledger checkpoint was written with another delta/accountant; "
                "resume with the run's original privacy settings"
            )
        events = [event_from_json(e) for e in state["events"]]
        for entity, runs in state["log"].items():
            for eid, count in runs:
                for _ in range(int(count)):
                    self.spend(entity, events[int(eid)])
        self.prune()
