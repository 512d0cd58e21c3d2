"""AIM (McKenna, Mullins, Sheldon & Miklau 2022) with a planned, data-independent budget.

AIM measures marginals one round at a time, each round choosing the 2-way marginal the
current model gets most wrong (after discounting the noise its measurement would add):

1. measure every 1-way marginal with Gaussian noise σ₀;
2. for ``T`` rounds: score each candidate pair ``r`` (the workload's pairs whose cell count
   is at most ``max_cells``, a public bound) by
   ``q_r = ‖M_r(D) − M_r(p̂)‖₁ − √(2/π)·σ·cells_r`` (sensitivity 1), pick one with the
   exponential mechanism at ε₁, measure it with Gaussian noise σ, re-fit the model ``p̂``
   (warm start).

Difference from the paper: AIM anneals the per-round budget and stops when the budget is
spent, which needs a privacy filter; veil plans a fixed number of rounds with a fixed
split (per step: 90 % of its ρ to measuring, 10 % to selecting), so the event is known
before any data is read and the ledger's ε holds without adaptive-composition arguments.
Events: ``GaussianDpEvent(σ₀)`` × n, ``ZCDpEvent(ε₁²/8)`` × T, ``GaussianDpEvent(σ)`` × T.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from veil.crypto.prg import SecureRng
from veil.errors import ConfigError
from veil.privacy.accounting import calibrate_noise

__all__ = ["aim_rounds", "plan_aim"]

#: Largest 2-way marginal (cells) AIM may select (public, data-independent).
MAX_CELLS = 10_000


def plan_aim(sizes: Mapping[str, int], target_epsilon: float, delta: float,
             factors: Mapping[str, float] | None = None, rounds: int | None = None) -> Any:
    """AIM's plan: ``rounds`` (default: the number of columns) select-and-measure rounds.

    Raises:
        ConfigError: fewer than two columns, ``rounds`` < 1, or no scale meets the budget.
    """
    from veil.synth.mechanisms import ACCOUNTANT, MechanismPlan, _factors

    names = list(sizes)
    n = len(names)
    if n < 2:
        raise ConfigError("AIM needs at least two columns", key="schema.columns")
    t_rounds = n if rounds is None else int(rounds)
    if t_rounds < 1:
        raise ConfigError("rounds must be >= 1", key="synth.rounds")
    fac = _factors(names, factors)

    def make(t: float) -> MechanismPlan:
        step = 1.0 / (t * t) / (n + t_rounds)  # ρ = 1/t², shared equally by the steps
        return MechanismPlan(
            name="aim",
            one_way_sigma={c: math.sqrt(1.0 / (2.0 * step)) * fac[c] for c in names},
            cliques=[],
            selections=t_rounds,
            select_eps=math.sqrt(8.0 * 0.1 * step),
            pair_sigma=math.sqrt(1.0 / (2.0 * 0.9 * step)),
            factors=fac,
        )

    t = calibrate_noise(lambda t: make(t).record_event(), target_epsilon, delta, ACCOUNTANT,
                        what="AIM noise scale")
    return make(t)


def aim_rounds(mbi: Any, data: Any, domain: Any, plan: Any, meas: list[Any], iters: int,
               rng: SecureRng) -> tuple[list[Any], list[tuple[str, str]]]:
    """Run AIM's rounds on top of the 1-way measurements ``meas``.

    Returns:
        All measurements (``meas`` plus one per round) and the selected pairs, in order.
    """
    from veil.synth.mechanisms import _estimate, _measure, exponential_select

    names = list(domain.attributes)
    pairs = [p for p in itertools.combinations(names, 2)
             if domain.size(list(p)) <= MAX_CELLS]
    truth = {p: np.asarray(data.project(p).datavector(), dtype=np.float64) for p in pairs}
    model = _estimate(mbi, domain, meas, iters)
    chosen: list[tuple[str, str]] = []
    for _ in range(plan.selections):
        score = np.empty(len(pairs))
        for i, p in enumerate(pairs):
            err = np.abs(truth[p] - np.asarray(model.project(p).datavector())).sum()
            sig = plan.pair_sigma * max(plan.factors[p[0]], plan.factors[p[1]])
            score[i] = err - math.sqrt(2.0 / math.pi) * sig * truth[p].size
        a, b = pairs[exponential_select(score, plan.select_eps, 1.0, rng)]
        sig = plan.pair_sigma * max(plan.factors[a], plan.factors[b])
        meas = meas + [_measure(mbi, data, (a, b), sig, rng)]
        chosen.append((a, b))
        model = mbi.estimation.MirrorDescent().estimate(
            domain, meas, iters=max(100, iters // 4), warm_start=model)
    return meas, chosen
