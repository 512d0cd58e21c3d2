"""Accounted hyper-parameter tuning (veil.privacy.tuning): the distribution of K, the ε of
the search checked against Papernot & Steinke's bound computed by hand, and a search that
releases the best trial and nothing else."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np
import pytest
from dp_accounting import dp_event as dpe
from dp_accounting.rdp import rdp_privacy_accountant as rdp

from tests.privacy.by_hand import ORDERS
from tests.privacy.by_hand import search_epsilon_by_hand as _hand_epsilon
from veil.crypto.prg import SecureRng
from veil.errors import ConfigError
from veil.privacy import PrivacyLedger
from veil.privacy.accounting import check_supported
from veil.privacy.tuning import TuningPlan, TuningResult, tune


@pytest.mark.parametrize(("mean", "shape"), [(2.0, 0.0), (3.0, 0.5), (5.0, 1.0), (4.0, 2.5)])
def test_gamma_pmf_and_mean(mean: float, shape: float) -> None:
    plan = TuningPlan(mean, shape)
    # γ: the same mean → γ map as dp-accounting's accountant uses (its own bisection)
    assert plan.gamma == pytest.approx(
        rdp._gamma_truncated_negative_binomial(shape, mean), rel=1e-7
    )
    # never a smaller γ than the one the accountant's bound is computed at (the bound
    # decreases in γ, so it covers the K drawn here)
    assert plan.gamma >= rdp._gamma_truncated_negative_binomial(shape, mean)
    ks = range(1, 5_000)
    assert sum(plan.pmf(k) for k in ks) == pytest.approx(1.0, abs=1e-9)
    assert sum(k * plan.pmf(k) for k in ks) == pytest.approx(mean, rel=1e-6)
    assert plan.pmf(0) == 0.0  # at least one trial, always


def test_draws_follow_the_distribution() -> None:
    plan = TuningPlan(2.0, 0.0)
    rng = SecureRng.from_seed(7, "test/tuning/draws")
    k = np.array([plan.draw(rng) for _ in range(20_000)])
    assert k.min() >= 1
    # 20k draws: std of the mean ≈ 1.6/√20000 ≈ 0.011; tolerance 5 std
    assert abs(k.mean() - 2.0) < 0.06
    for j in (1, 2, 3):  # each frequency within 5 binomial std of P[K = j]
        p = plan.pmf(j)
        assert abs((k == j).mean() - p) < 5 * math.sqrt(p * (1 - p) / len(k))


def test_one_trial_plan_is_the_trial_itself() -> None:
    plan = TuningPlan(1.0)
    event = dpe.GaussianDpEvent(2.0)
    assert plan.event(event) == event
    assert plan.draw(SecureRng.from_seed(0, "x")) == 1


@pytest.mark.parametrize(("mean", "shape"), [(2.0, 0.5), (3.0, 1.0), (5.0, 2.0)])
def test_search_epsilon_matches_the_theorem_by_hand(mean: float, shape: float) -> None:
    sigma, delta = 4.0, 1e-5
    plan = TuningPlan(mean, shape)
    ledger = PrivacyLedger(delta, "rdp")
    ledger.spend("site0", plan.event(dpe.GaussianDpEvent(sigma)))
    got = ledger.epsilon("site0")
    # the two agree to ~1e-5 (similar order grids); a wrong mean or shape moves ε by > 4%
    assert got == pytest.approx(_hand_epsilon(sigma, mean, shape, delta), rel=1e-3)
    one = PrivacyLedger(delta, "rdp")
    one.spend("site0", dpe.GaussianDpEvent(sigma))
    # dearer than one trial, cheaper than composing the 95th percentile of K in full
    k95 = next(k for k in range(1, 500) if sum(plan.pmf(j) for j in range(1, k + 1)) >= 0.95)
    full = PrivacyLedger(delta, "rdp")
    for _ in range(k95):
        full.spend("site0", dpe.GaussianDpEvent(sigma))
    assert one.epsilon("site0") < got < full.epsilon("site0")


def test_pld_accountant_is_refused_with_a_pointer_to_rdp() -> None:
    event = TuningPlan(2.0).event(dpe.GaussianDpEvent(3.0))
    with pytest.raises(ConfigError, match="rdp"):
        check_supported(event, "pld", "the tuning search")


def test_search_makes_exactly_k_trials_and_releases_only_the_best() -> None:
    calls: list[tuple[str, int]] = []
    scores = {"a": 0.2, "b": 0.9, "c": 0.5}

    def trial(cand: str, i: int) -> tuple[str, float]:
        calls.append((cand, i))
        return f"model-{cand}-{i}", scores[cand]

    for seed in range(30):
        calls.clear()
        plan = TuningPlan(3.0, 1.0)
        res = tune(["a", "b", "c"], trial, plan, SecureRng.from_seed(seed, "test/tuning"))
        k = plan.draw(SecureRng.from_seed(seed, "test/tuning"))  # K is the stream's first draw
        assert len(calls) == k >= 1
        assert [i for _, i in calls] == list(range(k))
        best = max(calls, key=lambda c: scores[c[0]])  # max keeps the first of ties
        assert (res.candidate, res.output, res.score) == (
            best[0],
            f"model-{best[0]}-{best[1]}",
            scores[best[0]],
        )
    # the result has room for the best trial only: no other trial's score or model, and
    # not K either (publishing K voids the bound: the next test)
    assert {f.name for f in fields(TuningResult)} == {"candidate", "output", "score"}


def _exact_epsilon(p: np.ndarray, q: np.ndarray, delta: float) -> float:
    """Smallest ε with both hockey-stick divergences ≤ δ (discrete outputs), by bisection."""
    lo, hi = 0.0, 100.0
    for _ in range(100):
        mid = (lo + hi) / 2
        over = max(np.maximum(0, p - math.exp(mid) * q).sum(),
                   np.maximum(0, q - math.exp(mid) * p).sum())
        lo, hi = (mid, hi) if over > delta else (lo, mid)
    return hi


def test_revealing_k_would_void_the_bound() -> None:
    """Why K stays secret. Trial: randomized response with ε₀ = 1 on one bit (score = the
    bit; the best of K outputs 1 iff any trial does). Exact ε(δ) of the search, computed
    from the output distributions: within the RepeatAndSelect bound when only the best
    is released, far above it when K is released with it."""
    eps0, delta, plan = 1.0, 1e-5, TuningPlan(2.0, 0.0)
    ks = np.arange(1, 4_000)
    pk = np.array([plan.pmf(int(k)) for k in ks])
    p1 = math.exp(eps0) / (1 + math.exp(eps0))  # P[output 1 | bit 1]; 1 − p1 given bit 0
    none_1, none_0 = (1 - p1) ** ks, p1**ks  # P[every trial outputs 0 | bit]
    hidden = _exact_epsilon(np.array([pk @ none_1, 1 - pk @ none_1]),
                            np.array([pk @ none_0, 1 - pk @ none_0]), delta)
    revealed = _exact_epsilon(np.concatenate([pk * none_1, pk * (1 - none_1)]),
                              np.concatenate([pk * none_0, pk * (1 - none_0)]), delta)
    # randomized response changes one bit: the replace-one relation (veil's ledger is
    # add/remove), so dp-accounting's RDP accountant directly
    from dp_accounting.privacy_accountant import NeighboringRelation

    acc = rdp.RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    rr = dpe.RandomizedResponseDpEvent(noise_parameter=2 / (1 + math.exp(eps0)), num_buckets=2)
    bound = acc.compose(plan.event(rr)).get_epsilon(delta)
    assert hidden <= bound  # the bound holds for what tune releases
    assert revealed > 5 * bound  # ~13 against ~2: a released K is not covered


def test_the_number_of_trials_is_not_chosen_by_the_caller() -> None:
    """Same stream, same K whatever the trials return: K never depends on the scores."""
    plan = TuningPlan(2.0)
    ks = []
    for bias in (0.0, 1.0):

        def trial(c: int, i: int, bias: float = bias) -> tuple[None, float]:
            return None, bias + c

        n = [0]

        def counted(c: int, i: int, trial: Any = trial, n: list[int] = n) -> tuple[None, float]:
            n[0] += 1
            return trial(c, i)  # type: ignore[no-any-return]

        tune([1, 2], counted, plan, SecureRng.from_seed(5, "k"))
        ks.append(n[0])
    assert ks[0] == ks[1]


def test_bad_input_is_refused() -> None:
    rng = SecureRng.from_seed(0, "bad")
    with pytest.raises(ConfigError):
        TuningPlan(0.5)
    with pytest.raises(ConfigError, match="Poisson"):
        TuningPlan(2.0, math.inf)
    with pytest.raises(ConfigError):
        tune([], lambda c, i: (None, 0.0), TuningPlan(), rng)
    with pytest.raises(ConfigError, match="SecureRng"):  # K is privacy randomness
        tune([1], lambda c, i: (None, 0.0), TuningPlan(), np.random.default_rng(0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="finite"):
        tune([1], lambda c, i: (None, float("nan")), TuningPlan(), rng)


def test_bench_search_spends_the_search_event_and_refuses_mixed_mechanisms() -> None:
    from veil.bench._features import N_FEATURES
    from veil.bench.utility import DPLinearConfig, tuned_dp_linear

    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=(n, N_FEATURES + 6)).astype(np.float32)
    y = rng.integers(0, 3, n)
    y[:] = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0)  # learnable labels
    grid = [DPLinearConfig(rate=0.5, epochs=2, lr=lr) for lr in (0.5, 1.0)]
    parts = [np.arange(0, 150), np.arange(150, n)]
    (w, mean, var), info = tuned_dp_linear(x, y, parts, grid, plan=TuningPlan(2.0), label="t")
    assert w.shape == (10, x.shape[1] + 1) and mean.shape == var.shape == (81,)
    assert info["accountant"] == "rdp"
    assert 2.9 < info["epsilon_spent_max"] <= 3.0 + 1e-6
    assert info["selected"]["lr"] in (0.5, 1.0)
    assert "not released" in info["tuning"]["trials"]  # K stays secret
    with pytest.raises(ConfigError, match="noise multiplier"):
        from veil.bench.utility import train_dp_linear

        train_dp_linear(x, y, parts, grid[0], noise_multiplier=0.0)
    with pytest.raises(ConfigError, match="one DP mechanism"):
        tuned_dp_linear(x, y, parts, [grid[0], DPLinearConfig(rate=0.25, epochs=2)])


def test_bench_search_epsilon_matches_the_theorem_for_its_real_trial() -> None:
    """The utility benchmark's trial: DP normalisation (2 Gaussians), Poisson-subsampled
    DP-SGD, the noisy score. Its RDP curve comes from dp-accounting's per-event RDP; the
    search's bound and the conversion are computed here."""
    from veil.bench.utility import CENTRAL_GRID, TUNING, trial_event

    sigma = 5.4305  # the benchmark's calibrated σ (E[K] = 2, logarithmic)
    event = trial_event(sigma, CENTRAL_GRID[0])
    acc = rdp.RdpAccountant(list(ORDERS))
    acc.compose(event)
    curve = np.asarray(acc._rdp)  # the trial's RDP at each order (dp-accounting, per event)
    ledger = PrivacyLedger(1e-5, "rdp")
    ledger.spend("site0", TUNING.event(event))
    hand = _hand_epsilon(sigma, TUNING.mean_runs, TUNING.shape, 1e-5, curve)
    assert ledger.epsilon("site0") == pytest.approx(hand, rel=0.01)
    assert 2.9 < hand < 3.05  # the benchmark's ε = 3 holds by the independent route too
