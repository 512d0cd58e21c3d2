"""The simulated latency model: how long one job of one site takes (simulated seconds).

A job is one site training from the model it received and sending its update. Its
duration is

    T(site, job) = latency_s · exp(latency_spread · Z) · H(site, job),   Z ~ N(0, 1),

a log-normal with median ``latency_s`` (``federation.latency_s``,
``federation.latency_spread``), times a heavy tail ``H``
(``federation.buffered.latency_tail``):

* ``none``: H = 1;
* ``slow_sites``: a fixed set of ``round(slow_fraction · n_sites)`` sites, drawn once from
  the seed, has H = ``slow_factor`` on every job (persistent stragglers: a phone on a bad
  link, an overloaded hospital server);
* ``pareto``: H = 1 + Lomax(pareto_shape) drawn afresh per job (a Pareto factor ≥ 1 with
  tail index ``pareto_shape``: rare very slow jobs at every site).

Every draw is seeded by ``(seed, site, job)`` alone (never a running stream), so a resumed
run sees the same durations as an uninterrupted one, and a synchronous and a buffered run
of the same seed draw the same duration for the same (site, job). The model is simulated
time: nothing waits; it is data-independent and public.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from veil.errors import ConfigError

if TYPE_CHECKING:
    from veil.federation.buffered_config import BufferedConfig

__all__ = ["LatencyModel", "TAILS"]

TAILS = ("none", "slow_sites", "pareto")


@dataclass(frozen=True)
class LatencyModel:
    """Seeded durations of the sites' jobs.

    Args:
        n_sites: sites in the federation.
        seed: the run seed.
        latency_s: median job duration (simulated seconds).
        spread: log-normal sigma.
        tail: ``"none"``, ``"slow_sites"`` or ``"pareto"``.
        slow_fraction: share of slow sites (``slow_sites``).
        slow_factor: their slow-down (``slow_sites``).
        pareto_shape: tail index (``pareto``).

    Raises:
        ConfigError: unknown tail or out-of-range parameters.
    """

    n_sites: int
    seed: int = 0
    latency_s: float = 1.0
    spread: float = 0.5
    tail: str = "none"
    slow_fraction: float = 0.2
    slow_factor: float = 10.0
    pareto_shape: float = 1.5
    slow: frozenset[int] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        if self.tail not in TAILS:
            raise ConfigError(
                f"unknown latency tail {self.tail!r}; choose one of {TAILS}",
                key="federation.buffered.latency_tail",
            )
        if not (self.latency_s > 0 and self.spread >= 0 and self.slow_factor >= 1
                and 0 <= self.slow_fraction <= 1 and self.pareto_shape > 0):
            raise ConfigError(
                "latency model: latency_s > 0, latency_spread >= 0, slow_factor >= 1, "
                "0 <= slow_fraction <= 1 and pareto_shape > 0 are needed",
                key="federation.latency_s",
            )
        slow: frozenset[int] = frozenset()
        if self.tail == "slow_sites":
            n_slow = int(round(self.slow_fraction * self.n_sites))
            rng = np.random.default_rng([self.seed, 0x5105])
            slow = frozenset(int(s) for s in rng.choice(self.n_sites, n_slow, replace=False))
        object.__setattr__(self, "slow", slow)

    @classmethod
    def from_config(
        cls, n_sites: int, seed: int, latency_s: float, spread: float, buffered: BufferedConfig
    ) -> LatencyModel:
        """The model of ``federation.latency_s``/``latency_spread`` and the tail keys of
        ``[federation.buffered]``."""
        return cls(n_sites, seed, latency_s, spread, buffered.latency_tail,
                   buffered.slow_fraction, buffered.slow_factor, buffered.pareto_shape)

    def seconds(self, site: int, job: int) -> float:
        """Duration of ``site``'s job number ``job`` (simulated seconds)."""
        rng = np.random.default_rng([self.seed, int(site), int(job), 0x1A7])
        t = self.latency_s * float(np.exp(self.spread * rng.standard_normal()))
        if self.tail == "slow_sites" and int(site) in self.slow:
            t *= self.slow_factor
        elif self.tail == "pareto":
            t *= 1.0 + float(rng.pareto(self.pareto_shape))
        return t

    def describe(self) -> dict[str, object]:
        """The model's parameters, for the run's record."""
        out: dict[str, object] = {
            "distribution": "log-normal", "median_s": self.latency_s, "sigma": self.spread,
            "tail": self.tail,
        }
        if self.tail == "slow_sites":
            out.update(slow_fraction=self.slow_fraction, slow_factor=self.slow_factor,
                       n_slow=len(self.slow))
        elif self.tail == "pareto":
            out["pareto_shape"] = self.pareto_shape
        return out
