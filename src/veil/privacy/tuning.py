"""Accounted hyper-parameter tuning: random search whose selection is charged in ε.

Trying several configurations on private data and keeping the best one leaks more than
one run does, and charging every trial in full (k-fold composition) is wasteful.
Papernot & Steinke (ICLR 2022, "Hyperparameter tuning with Renyi differential privacy",
arXiv:2110.03620) show that if the *number* of trials ``K`` is itself random, drawn from a
truncated negative binomial distribution, and only the best trial's output is released,
the whole search costs little more than one trial. dp-accounting implements their bound
as :class:`dp_accounting.dp_event.RepeatAndSelectDpEvent` (RDP accountant only); this
module draws ``K`` and runs the search so that the event is what actually happened.

What the guarantee needs, and what :func:`tune` does:

* each trial is one run of a DP mechanism ``M`` whose output is ``(model, score)``: the
  score must be part of ``M``'s DP output (e.g. a noisy count of correct predictions),
  never an exact statistic of private data;
* every trial uses the same mechanism (same DP event); the configuration of trial ``i``
  is drawn at random from a fixed list, independently of the data;
* ``K ≥ 1`` is drawn from the plan's distribution with a CSPRNG and is not chosen by
  anyone; the search stops after exactly ``K`` trials;
* only the best trial's ``(model, score, configuration)`` is released; the other trials'
  scores and models are dropped (:class:`TuningResult` holds nothing else of them);
* **``K`` stays secret.** The bound mixes over a ``K`` the observer does not know; given
  ``K = k``, best-of-``k`` can leak about ``k`` times one trial (for randomized response
  with ε₀ = 1 and E[K] = 2, ε at δ = 1e-5 is 1.99 with ``K`` hidden and about 13 with it
  known). So :class:`TuningResult` does not carry ``K``, ``progress`` is not told it, and
  nothing that is published may reveal it: not a count of trials, not the search's wall
  time, not per-trial progress lines.

Distribution of ``K`` (shape ``η``, success probability ``γ`` set from the mean):
``P[K = k] ∝ (1 − γ)^k · Π_{ℓ<k} (ℓ + η) / (ℓ + 1)`` for ``k ≥ 1`` (``η = 0`` is the
logarithmic distribution, ``η = 1`` the geometric). The Poisson case of the paper can
return no trial at all (``K = 0``) and is not offered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar

from dp_accounting import dp_event as dpe

from veil.crypto.prg import SecureRng
from veil.errors import ConfigError

__all__ = ["TuningPlan", "TuningResult", "tune"]

C = TypeVar("C")
_KEY = "privacy.tuning"


def _check_rng(rng: object) -> None:
    """K and the candidates' draws are privacy randomness: a CSPRNG stream only."""
    if not isinstance(rng, SecureRng):
        raise ConfigError(
            f"the tuning search draws K from a veil.crypto.prg.SecureRng, not a "
            f"{type(rng).__name__}",
            key=_KEY,
        )


def _mean(gamma: float, shape: float) -> float:
    """Mean of the truncated negative binomial (``k ≥ 1``) with parameters ``(η, γ)``."""
    if shape == 0:
        return (1 - gamma) / (gamma * math.log(1 / gamma))
    return shape * (1 - gamma) / (gamma * (1 - gamma**shape))


@dataclass(frozen=True)
class TuningPlan:
    """How many trials a search makes: a random ``K ≥ 1`` with mean ``mean_runs``.

    Attributes:
        mean_runs: expected number of trials ``E[K] ≥ 1`` (1 means exactly one trial).
        shape: ``η ≥ 0`` of the truncated negative binomial: 0 (logarithmic, the
            cheapest in ε for a given mean at most Rényi orders, the default), 1
            (geometric), any finite value in between or above.
    """

    mean_runs: float = 2.0
    shape: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean_runs) and self.mean_runs >= 1):
            raise ConfigError(f"mean_runs must be ≥ 1, got {self.mean_runs}", key=_KEY)
        if not (math.isfinite(self.shape) and self.shape >= 0):
            raise ConfigError(
                f"shape must be finite and ≥ 0 (the Poisson case may run no trial), "
                f"got {self.shape}",
                key=_KEY,
            )

    @cached_property
    def gamma(self) -> float:
        """``γ`` with ``E[K] = mean_runs`` (bisection; ``E[K]`` decreases in ``γ``).

        The bisection keeps the upper end (``E[K] ≤ mean_runs``). dp-accounting computes
        the search's bound at its own γ, the lower end of its bisection. Papernot &
        Steinke's bound decreases in γ, so that bound also covers the K drawn here.
        """
        if self.mean_runs == 1:
            return 1.0
        if self.shape == 1:
            return 1 / self.mean_runs
        lo, hi = 1e-12, 1 - 1e-12
        for _ in range(200):
            mid = (lo + hi) / 2
            if _mean(mid, self.shape) > self.mean_runs:
                lo = mid
            else:
                hi = mid
        return hi

    def pmf(self, k: int) -> float:
        """``P[K = k]``."""
        if k < 1:
            return 0.0
        g = self.gamma
        if g >= 1:
            return 1.0 if k == 1 else 0.0
        if self.shape == 0:
            return (1 - g) ** k / (k * math.log(1 / g))
        log_p = k * math.log1p(-g) + self.shape * math.log(g) - math.log1p(-(g**self.shape))
        log_p += math.lgamma(k + self.shape) - math.lgamma(self.shape) - math.lgamma(k + 1)
        return math.exp(log_p)

    def draw(self, rng: SecureRng) -> int:
        """A number of trials ``K`` (inverse CDF of one CSPRNG uniform).

        Raises:
            ConfigError: ``rng`` is not a :class:`~veil.crypto.prg.SecureRng`.
        """
        _check_rng(rng)
        u, k, total = float(rng.uniform(1)[0]), 1, 0.0
        g = self.gamma
        if g >= 1:
            return 1
        p = self.pmf(1)
        while True:
            total += p
            if u < total or p < 1e-300:
                return k
            p *= (1 - g) * (k + self.shape) / (k + 1)  # P[K = k + 1] / P[K = k]
            k += 1

    def event(self, trial: dpe.DpEvent) -> dpe.DpEvent:
        """The DP event of the whole search, given one trial's event (RDP accountant)."""
        if self.mean_runs == 1:
            return trial
        return dpe.RepeatAndSelectDpEvent(trial, self.mean_runs, self.shape)


@dataclass(frozen=True)
class TuningResult(Generic[C]):
    """What a search releases: the best trial only.

    Attributes:
        candidate: the configuration of the best trial.
        output: that trial's output (e.g. the trained model).
        score: that trial's (DP) score.

    ``K`` is deliberately absent: publishing it voids the bound (module docstring).
    """

    candidate: C
    output: Any
    score: float


def tune(
    candidates: Sequence[C],
    trial: Callable[[C, int], tuple[Any, float]],
    plan: TuningPlan,
    rng: SecureRng,
    *,
    progress: Callable[[int], None] | None = None,
) -> TuningResult[C]:
    """Random search with a random number of trials; releases only the best one.

    Args:
        candidates: the configurations to draw from (uniformly, with replacement).
        trial: ``trial(candidate, i) -> (output, score)``: one run of the *same* DP
            mechanism for every candidate, whose score is part of its DP output; ``i``
            numbers the trial (use it to derive that trial's noise streams). Higher
            scores are better; ties keep the earlier trial.
        plan: the distribution of the number of trials; spend :meth:`TuningPlan.event`
            of the trial's event in the ledger.
        rng: CSPRNG stream for ``K`` and for the draws of candidates.
        progress: called as ``progress(i)`` after trial ``i`` (1-based; no score, no
            ``K``). Whoever watches it learns ``K`` at the end: keep it off anything
            published.

    Raises:
        ConfigError: no candidates, ``rng`` not a CSPRNG stream, or a trial returned a
            score that is not a finite number.
    """
    _check_rng(rng)
    if not candidates:
        raise ConfigError("tuning needs at least one candidate configuration", key=_KEY)
    k = plan.draw(rng)
    picks = rng.integers(len(candidates), k)
    best: TuningResult[C] | None = None
    for i in range(k):
        cand = candidates[int(picks[i])]
        output, score = trial(cand, i)
        if not (isinstance(score, int | float) and math.isfinite(score)):
            raise ConfigError(f"trial {i} returned a score that is not a finite number", key=_KEY)
        if best is None or score > best.score:
            best = TuningResult(cand, output, float(score))
        if progress is not None:
            progress(i + 1)
    assert best is not None  # k ≥ 1
    return best
