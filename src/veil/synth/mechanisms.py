"""Marginal-based DP synthesis mechanisms on private-pgm's ``mbi``.

``mbi`` (Private-PGM, McKenna et al. 2019) estimates a graphical model from noisy
marginals and samples records from it; it ships no privacy mechanism, so the measuring
and selecting is veil's code here, and every ε comes from dp-accounting.

Mechanisms (add-or-remove-one record neighbouring relation):

* **MST** (McKenna, Miklau & Sheldon 2021): with total zCDP budget ρ split in thirds,
  1. measure every 1-way marginal with Gaussian noise σ₁ (L2 sensitivity 1 each);
  2. estimate a model from them and score each column pair by the L1 distance between its
     true 2-way marginal and the model's (sensitivity 1); pick ``n - 1`` pairs forming a
     maximum spanning tree with the exponential mechanism (ε₀ each, by Gumbel-max on
     CSPRNG uniforms), which is ε₀²/8-zCDP (bounded range; Cesar & Rogers 2021);
  3. measure the chosen 2-way marginals with Gaussian noise σ₂ and estimate the model.
* **AIM** (``"aim"``, :mod:`veil.synth.aim`): rounds that each select (exponential
  mechanism) and measure the pair the current model fits worst, with a planned budget;
* **public workload** (``"fixed"``): measure the 2-way marginals a *public* list names
  (for example every feature with the label), plus the 1-way marginal of any column no
  clique covers; the structure is chosen without data, so all budget goes to measuring.

Privacy events: each Gaussian measurement is ``GaussianDpEvent(σ)``; each selection is
``ZCDpEvent(ε₀²/8)``; the mechanism's event composes them (``ComposedDpEvent``) and the
budget is met by calibrating one noise scale with dp-accounting's calibration. The
event is *planned* before any data is read (worst case over data-dependent choices), so
the ledger's ε holds whatever the selection picks.

Per-column (attribute) accounting: under the relation "one record's value of column c
changes", only measurements touching c are affected, each with L2 sensitivity √2, and a
selection step moves each score by at most 2 (so ε₀ becomes 2ε₀). Measurements that touch
a column marked *sensitive* can take extra noise (``noise_factor``); the attribute-level
ε of that column is then smaller than the record-level ε. This is a guarantee for that
column's values only — record-level ε remains the guarantee for a whole record.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dp_accounting import dp_event as dpe

from veil.crypto.prg import SecureRng
from veil.errors import ConfigError
from veil.privacy.accounting import calibrate_noise, epsilon

__all__ = [
    "MECHANISMS",
    "MechanismPlan",
    "MechanismResult",
    "exponential_select",
    "load_mbi",
    "plan_fixed",
    "plan_mst",
    "run_mechanism",
]

MECHANISMS = ("mst", "aim", "fixed")

#: The accountant for synthesis events (the RDP accountant supports ``ZCDpEvent``).
ACCOUNTANT = "rdp"


def load_mbi() -> Any:
    """Import ``mbi`` with JAX in float64 and without a persistent compile cache.

    Raises:
        ConfigError: the ``synth`` extra (mbi, jax) is not installed.
    """
    try:
        import jax
    except ImportError:
        raise ConfigError(
            "DP synthetic data needs the `synth` extra: pip install -e '.[synth]' (mbi, jax)",
            key="synth",
        ) from None
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        import mbi
    except ImportError:
        raise ConfigError(
            "DP synthetic data needs the `synth` extra: pip install -e '.[synth]' (mbi)",
            key="synth",
        ) from None
    return mbi


def exponential_select(scores: np.ndarray, eps: float, sensitivity: float,
                       rng: SecureRng) -> int:
    """The exponential mechanism: index ``i`` with probability ∝ exp(ε·s_i / (2Δ)).

    Sampled exactly by Gumbel-max: ``argmax(ε s / 2Δ + G)`` with ``G = -log(-log U)`` and
    ``U`` uniform from the CSPRNG.
    """
    s = np.asarray(scores, dtype=np.float64)
    g = -np.log(-np.log(rng.uniform(len(s))))
    return int(np.argmax(eps * s / (2.0 * sensitivity) + g))


@dataclass(frozen=True)
class MechanismPlan:
    """A mechanism's data-independent plan and its planned DP events.

    Attributes:
        name: ``"mst"``, ``"aim"`` or ``"fixed"``.
        one_way_sigma: column -> σ of its 1-way measurement (absent: not measured).
        cliques: for ``fixed``, the 2-way cliques measured, with their σ.
        selections: number of exponential-mechanism selections (MST: ``n - 1``; AIM: its
            rounds).
        select_eps: ε₀ of each selection.
        pair_sigma: σ of each selected 2-way measurement before its column factor.
        factors: column -> noise factor (≥ 1; > 1 for sensitive columns).
    """

    name: str
    one_way_sigma: dict[str, float]
    cliques: list[tuple[tuple[str, ...], float]]
    selections: int
    select_eps: float
    pair_sigma: float
    factors: dict[str, float]

    def record_event(self) -> dpe.DpEvent:
        """Planned event under add-or-remove-one record (worst case over selections)."""
        parts: list[dpe.DpEvent] = [dpe.GaussianDpEvent(s) for s in self.one_way_sigma.values()]
        parts += [dpe.GaussianDpEvent(s) for _, s in self.cliques]
        if self.selections:
            parts.append(dpe.SelfComposedDpEvent(
                dpe.ZCDpEvent(self.select_eps**2 / 8.0), self.selections))
            # Each chosen pair's noise is σ₂ times a factor ≥ 1: σ₂ alone is the worst case.
            parts.append(dpe.SelfComposedDpEvent(
                dpe.GaussianDpEvent(self.pair_sigma), self.selections))
        return dpe.ComposedDpEvent(parts)

    def attribute_event(self, column: str) -> dpe.DpEvent:
        """Planned event when only ``column``'s value of one record may change."""
        r2 = math.sqrt(2.0)
        parts: list[dpe.DpEvent] = []
        if column in self.one_way_sigma:
            parts.append(dpe.GaussianDpEvent(self.one_way_sigma[column] / r2))
        parts += [dpe.GaussianDpEvent(s / r2) for c, s in self.cliques if column in c]
        if self.selections:
            parts.append(dpe.SelfComposedDpEvent(
                dpe.ZCDpEvent((2 * self.select_eps) ** 2 / 8.0), self.selections))
            # Worst case: every chosen pair touches the column (noise ≥ its factor).
            f = self.factors.get(column, 1.0)
            parts.append(dpe.SelfComposedDpEvent(
                dpe.GaussianDpEvent(self.pair_sigma * f / r2), self.selections))
        return dpe.ComposedDpEvent(parts) if parts else dpe.NoOpDpEvent()


def _factors(names: Sequence[str], factors: Mapping[str, float] | None) -> dict[str, float]:
    out = {n: 1.0 for n in names}
    for k, v in (factors or {}).items():
        if k not in out:
            raise ConfigError(f"noise factor for unknown column {k!r}", key="synth.sensitive")
        if not v >= 1.0:
            raise ConfigError(f"noise factor must be >= 1, got {v}", key="synth.sensitive")
        out[k] = float(v)
    return out


def plan_mst(sizes: Mapping[str, int], target_epsilon: float, delta: float,
             factors: Mapping[str, float] | None = None) -> MechanismPlan:
    """MST's plan: one noise scale ``t`` (ρ = 1/t²) calibrated so ε(δ) ≤ the target.

    Raises:
        ConfigError: fewer than two columns, or no scale meets the budget.
    """
    names = list(sizes)
    n = len(names)
    if n < 2:
        raise ConfigError("MST needs at least two columns", key="schema.columns")
    fac = _factors(names, factors)
    r = n - 1

    def make(t: float) -> MechanismPlan:
        rho3 = 1.0 / (3.0 * t * t)  # a third of ρ = 1/t² for each step
        s1 = math.sqrt(n / (2.0 * rho3))
        return MechanismPlan(
            name="mst",
            one_way_sigma={c: s1 * fac[c] for c in names},
            cliques=[],
            selections=r,
            select_eps=math.sqrt(8.0 * rho3 / r),
            pair_sigma=math.sqrt(r / (2.0 * rho3)),
            factors=fac,
        )

    t = calibrate_noise(lambda t: make(t).record_event(), target_epsilon, delta, ACCOUNTANT,
                        what="MST noise scale")
    return make(t)


def plan_fixed(sizes: Mapping[str, int], cliques: Sequence[Sequence[str]],
               target_epsilon: float, delta: float,
               factors: Mapping[str, float] | None = None) -> MechanismPlan:
    """The public-workload plan: measure ``cliques`` (+ 1-way of uncovered columns).

    Raises:
        ConfigError: a clique names an unknown column, or no noise meets the budget.
    """
    names = list(sizes)
    fac = _factors(names, factors)
    cl = [tuple(c) for c in cliques]
    for c in cl:
        bad = [a for a in c if a not in sizes]
        if bad or len(set(c)) != len(c) or not c:
            raise ConfigError(f"bad clique {list(c)}: unknown or repeated columns",
                              key="synth.cliques")
    covered = {a for c in cl for a in c}
    singles = [a for a in names if a not in covered]

    def make(s: float) -> MechanismPlan:
        return MechanismPlan(
            name="fixed",
            one_way_sigma={a: s * fac[a] for a in singles},
            cliques=[(c, s * max(fac[a] for a in c)) for c in cl],
            selections=0, select_eps=0.0, pair_sigma=0.0, factors=fac,
        )

    s = calibrate_noise(lambda s: make(s).record_event(), target_epsilon, delta, ACCOUNTANT,
                        what="measurement noise")
    return make(s)


@dataclass
class MechanismResult:
    """What a mechanism produced.

    Attributes:
        model: the fitted ``mbi`` graphical model (samples synthetic records).
        cliques: the marginals the model was fitted to.
        plan: the plan (its events are what the ledger charges).
    """

    model: Any
    cliques: list[tuple[str, ...]]
    plan: MechanismPlan
    info: dict[str, Any] = field(default_factory=dict)


def _measure(mbi: Any, data: Any, clique: Sequence[str], sigma: float,
             rng: SecureRng) -> Any:
    f = data.project(tuple(clique))
    counts = np.asarray(f.datavector(), dtype=np.float64)
    noisy = counts + rng.normal(counts.shape, sigma)
    return mbi.LinearMeasurement(noisy, tuple(f.domain.attributes), stddev=float(sigma))


def _estimate(mbi: Any, domain: Any, measurements: list[Any], iters: int) -> Any:
    return mbi.estimation.MirrorDescent().estimate(domain, measurements, iters=iters)


def _mst_select(mbi: Any, data: Any, domain: Any, plan: MechanismPlan, ones: list[Any],
                iters: int, rng: SecureRng) -> list[tuple[str, str]]:
    names = list(domain.attributes)
    est = _estimate(mbi, domain, ones, iters)
    pairs = list(itertools.combinations(names, 2))
    score = np.array([
        float(np.abs(np.asarray(data.project(p).datavector())
                     - np.asarray(est.project(p).datavector())).sum())
        for p in pairs
    ])
    comp = {a: a for a in names}

    def root(a: str) -> str:
        while comp[a] != a:
            comp[a] = comp[comp[a]]
            a = comp[a]
        return a

    chosen: list[tuple[str, str]] = []
    for _ in range(plan.selections):
        cand = [i for i, (a, b) in enumerate(pairs) if root(a) != root(b)]
        i = cand[exponential_select(score[cand], plan.select_eps, 1.0, rng)]
        a, b = pairs[i]
        comp[root(a)] = root(b)
        chosen.append((a, b))
    return chosen


def run_mechanism(codes: Mapping[str, np.ndarray], sizes: Mapping[str, int],
                  plan: MechanismPlan, rng: SecureRng, iters: int = 1000) -> MechanismResult:
    """Measure ``codes`` (discrete table) as ``plan`` says and fit an ``mbi`` model.

    Noise and selections draw from ``rng`` (a CSPRNG); the data are touched only through
    the noisy measurements and the selections the plan accounts for.
    """
    mbi = load_mbi()
    domain = mbi.Domain(list(sizes), [int(v) for v in sizes.values()])
    data = mbi.Dataset({k: np.asarray(codes[k]) for k in sizes}, domain)
    meas = [_measure(mbi, data, (a,), s, rng) for a, s in plan.one_way_sigma.items()]
    meas += [_measure(mbi, data, c, s, rng) for c, s in plan.cliques]
    cliques = [(a,) for a in plan.one_way_sigma] + [c for c, _ in plan.cliques]
    info: dict[str, Any] = {}
    if plan.name == "aim":
        from veil.synth.aim import aim_rounds

        meas, chosen = aim_rounds(mbi, data, domain, plan, meas, iters, rng)
        cliques += chosen
        info["selected_pairs"] = [list(p) for p in chosen]
    elif plan.selections:
        chosen = _mst_select(mbi, data, domain, plan, meas, iters, rng)
        for a, b in chosen:
            s = plan.pair_sigma * max(plan.factors[a], plan.factors[b])
            meas.append(_measure(mbi, data, (a, b), s, rng))
        cliques += chosen
        info["selected_pairs"] = [list(p) for p in chosen]
    model = _estimate(mbi, domain, meas, iters)
    return MechanismResult(model=model, cliques=[tuple(c) for c in cliques], plan=plan,
                           info=info)


def planned_epsilon(plan: MechanismPlan, delta: float) -> float:
    """ε(δ) of the plan's record-level event (dp-accounting, RDP accountant)."""
    return epsilon(plan.record_event(), delta, ACCOUNTANT)
