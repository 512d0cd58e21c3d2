"""Tiered protection: a lighter summation in most rounds, a stronger one in chosen rounds.

Frequent rounds can use the cheaper protocol (a plain sum, or SecAgg+ semi-honest) and
periodic checkpoints or the final model the stronger one (CKKS, SecAgg+): :class:`TieredSum`
is a summation protocol that delegates each round to one of two protocols by round number:

    strong(r) = (every is set and (r + 1) % every == 0) or (r == final_round)

Both protocols sum the same encoded rows (their domains must agree: the chain in front is
the one the stronger protocol needs), and :meth:`TieredSum.summation_for` names the protocol
of a round — the simulation writes it into every round's record (``summation``). The
protection of the run as a whole is that of the *lighter* tier for every round it used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from veil.aggregation.base import Domain, SumResult, summation_domain
from veil.errors import ConfigError

__all__ = ["TieredSum"]


@dataclass(frozen=True)
class TieredSum:
    """Delegate each round to ``light`` or ``strong``.

    Args:
        light: the summation of ordinary rounds.
        strong: the summation of the chosen rounds.
        every: rounds ``every - 1, 2·every - 1, ...`` (zero-based) use ``strong``.
        final_round: this (zero-based) round uses ``strong`` (the last round of the run).

    Raises:
        ConfigError: neither ``every`` nor ``final_round`` set, or ``every < 1``.
    """

    light: Any
    strong: Any
    every: int | None = None
    final_round: int | None = None
    name: str = "tiered"

    def __post_init__(self) -> None:
        if self.every is None and self.final_round is None:
            raise ConfigError(
                "TieredSum needs every or final_round", key="aggregation.strong_every"
            )
        if self.every is not None and self.every < 1:
            raise ConfigError("strong_every must be >= 1", key="aggregation.strong_every")

    @property
    def stages(self) -> tuple[str, ...]:
        """Every stage name of either protocol (see :meth:`stages_for` for one round's)."""
        out = list(self.light.stages)
        out += [s for s in self.strong.stages if s not in out]
        return tuple(out)

    def is_strong(self, round: int) -> bool:
        """Whether ``round`` uses the stronger summation."""
        periodic = self.every is not None and (round + 1) % self.every == 0
        return periodic or (self.final_round is not None and round == self.final_round)

    def protocol_for(self, round: int) -> Any:
        """The protocol that sums ``round``."""
        return self.strong if self.is_strong(round) else self.light

    def summation_for(self, round: int) -> str:
        """The name of the protocol that sums ``round`` (for the round's record)."""
        return str(self.protocol_for(round).name)

    def stages_for(self, round: int) -> tuple[str, ...]:
        """The dropout stages of the protocol that sums ``round``."""
        return tuple(self.protocol_for(round).stages)

    def domain(self, upstream: Domain) -> Domain:
        """What both protocols sum; they must agree.

        Raises:
            Misfit: either protocol cannot take ``upstream``.
            ConfigError: they produce different domains.
        """
        a = summation_domain(self.light, upstream)
        b = summation_domain(self.strong, upstream)
        if a != b:
            raise ConfigError(
                f"tiers {self.light.name!r} and {self.strong.name!r} sum different domains "
                f"({a} vs {b})", key="aggregation.strong_summation",
            )
        return a

    def check_chain(self, chain: Any) -> None:
        """Let each tier vet the chain in front of it, as it would in a pipeline of its own.

        Raises:
            ConfigError: whatever either tier's ``check_chain`` refuses.
        """
        for proto in (self.light, self.strong):
            vet = getattr(proto, "check_chain", None)
            if vet is not None:
                vet(chain)

    def aggregate(
        self,
        encoded: np.ndarray,
        site_ids: np.ndarray,
        round: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> SumResult:
        """Sum with this round's protocol; measurements keyed ``<protocol>/<key>`` plus
        ``strong`` (1.0 in a strong round).

        Raises:
            whatever the chosen protocol raises (AbortError, ...).
        """
        proto = self.protocol_for(round)
        res = proto.aggregate(encoded, site_ids, round, dropouts)
        meas = {f"{proto.name}/{k}": float(v) for k, v in res.measurements.items()}
        meas["strong"] = float(self.is_strong(round))
        return replace(res, measurements=meas)
