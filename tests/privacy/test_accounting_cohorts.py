"""Client-level ε per cohort scheme is an upper bound of what a neighbouring pair leaks.

For each scheme the test builds a concrete neighbouring pair under add/remove-one-site (a
federation D and D' = D plus one site x, every update one coordinate clipped to ±C),
computes the exact distribution of the noised sum from the cohort draw itself
(hypergeometric for a fixed-size cohort, binomial for Poisson), bins it (post-processing,
so the binned pair's ε is at most the real pair's), turns it into an *optimistic*
privacy loss distribution (dp-accounting, losses rounded down), composes it over the
rounds and reads ε(δ): a lower bound of the true ε. The ε veil reports must be at least
that. The same construction shows the old "Gaussian(z), no amplification" charge for
fixed cohorts is below the lower bound (the fault this replaces).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event as dpe
from dp_accounting.pld import privacy_loss_distribution as pldlib
from scipy.special import logsumexp
from scipy.stats import binom, hypergeom, norm

from veil.errors import ConfigError
from veil.privacy.accounting import calibrate_noise, check_supported, epsilon, sampled
from veil.privacy.neighbouring import RELATION, basis, cohort_event, merge_gaussians

DELTA = 1e-5
ROUNDS = 15


def _log_bin_masses(mu: float, sd: float, edges: np.ndarray) -> np.ndarray:
    """log P[Y in bin] for Y ~ N(mu, sd²); bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    z = (edges - mu) / sd
    lo = np.r_[-np.inf, z]
    hi = np.r_[z, np.inf]
    right = lo >= 0  # whole bin right of the mean: use survival functions (no cancellation)
    out = np.empty(len(lo))
    a, b = norm.logsf(lo[right]), norm.logsf(hi[right])
    out[right] = a + np.log1p(-np.exp(np.minimum(b - a, 0.0)))
    a, b = norm.logcdf(hi[~right]), norm.logcdf(lo[~right])
    out[~right] = a + np.log1p(-np.exp(np.minimum(b - a, 0.0)))
    return out


def _mixture(weights: np.ndarray, means: np.ndarray, sd: float, edges: np.ndarray) -> dict:
    keep = weights > 0
    # far-tail bins underflow to log 0; floor them at a negligible mass (e^-700)
    comps = np.stack([np.maximum(_log_bin_masses(m, sd, edges), -700.0) for m in means[keep]])
    logp = logsumexp(comps + np.log(weights[keep])[:, None], axis=0)
    return {i: float(v) for i, v in enumerate(logp)}


def _lower_bound(p_log: dict, q_log: dict) -> float:
    pld = pldlib.from_two_probability_mass_functions(
        p_log, q_log, pessimistic_estimate=False, value_discretization_interval=1e-3,
        symmetric=False,
    )
    return float(pld.self_compose(ROUNDS).get_epsilon_for_delta(DELTA))


def _edges(sd: float, lo: float, hi: float) -> np.ndarray:
    return np.arange(lo - 14 * sd, hi + 14 * sd, 0.02 * sd)


def _fixed_pair(n: int, m: int, plus: int, z: float) -> tuple[dict, dict]:
    """D: n-1 sites (``plus`` of them at +1, the rest at -1); D' adds one site at +1.

    A fixed-size cohort of m is drawn without replacement; the released value is the sum
    of the cohort's updates plus N(0, z²) (clip C = 1).
    """
    sd = z
    h = np.arange(m + 1)
    w_d = hypergeom.pmf(h, n - 1, plus, m)  # number of +1 sites in D's cohort
    w_d1 = hypergeom.pmf(h, n, plus + 1, m)  # ... in D''s cohort (x counts as a +1 site)
    means = 2.0 * h - m
    edges = _edges(sd, -m, m)
    return _mixture(w_d, means, sd, edges), _mixture(w_d1, means, sd, edges)


def _poisson_pair(n: int, q: float, plus: int, z: float) -> tuple[dict, dict]:
    """D: n-1 sites (``plus`` at +1, the rest at 0); D' adds one site at +1; Poisson(q)."""
    sd = z
    k = np.arange(plus + 2)
    w_d = binom.pmf(k, plus, q)
    w_d1 = binom.pmf(k, plus + 1, q)
    edges = _edges(sd, 0, plus + 1)
    return _mixture(w_d, k.astype(float), sd, edges), _mixture(w_d1, k.astype(float), sd, edges)


def _z_for(target: float) -> float:
    return calibrate_noise(
        lambda v: dpe.SelfComposedDpEvent(dpe.GaussianDpEvent(v), ROUNDS), target, DELTA, "rdp"
    )


@pytest.mark.parametrize("m", [50, 90])
def test_fixed_cohort_epsilon_bounds_the_neighbouring_pair(m: int) -> None:
    n = 100
    z = _z_for(8.0)  # the noise the old accounting said gives ε = 8 over 15 rounds
    old = epsilon(dpe.SelfComposedDpEvent(dpe.GaussianDpEvent(z), ROUNDS), DELTA, "rdp")
    lower = max(_lower_bound(*_fixed_pair(n, m, plus, z)) for plus in (0, 10))
    assert old == pytest.approx(8.0, abs=1e-3)
    assert lower > old + 1.0  # the old "Gaussian(z), no amplification" charge did not hold
    ev = dpe.SelfComposedDpEvent(sampled(dpe.GaussianDpEvent(z), "fixed", m / n), ROUNDS)
    for kind in ("pld", "rdp"):
        assert epsilon(ev, DELTA, kind) >= lower - 1e-6
    # PLD is tight here: the bound is within 2 % of the pair's lower bound
    assert epsilon(ev, DELTA, "pld") <= 1.02 * lower


def test_poisson_cohort_epsilon_bounds_the_neighbouring_pair() -> None:
    n, q, z = 100, 0.2, 1.2
    lower = max(_lower_bound(*_poisson_pair(n, q, plus, z)) for plus in (0, 5))
    ev = dpe.SelfComposedDpEvent(sampled(dpe.GaussianDpEvent(z), "poisson", q), ROUNDS)
    assert lower > 0.5
    for kind in ("pld", "rdp"):
        assert epsilon(ev, DELTA, kind) >= lower - 1e-6
    assert epsilon(ev, DELTA, "pld") <= 1.02 * lower


def test_full_participation_is_the_plain_gaussian() -> None:
    g = dpe.GaussianDpEvent(1.5)
    assert sampled(g, "fixed", 1.0) == g
    assert cohort_event(g, "fixed", 10, 10) == g
    assert cohort_event(g, "fixed", 5, 10) == dpe.PoissonSampledDpEvent(0.5, dpe.GaussianDpEvent(0.75))
    # known cohorts: no amplification, displacement still doubles the sensitivity
    assert cohort_event(g, "fixed", 5, 10, amplify=False) == dpe.GaussianDpEvent(0.75)
    assert cohort_event(g, "poisson", 5, 10, amplify=False) == g


def test_merged_gaussians_equal_the_composition() -> None:
    """Adaptive clipping's Composed([G(z), G(2σ_b)]) equals one Gaussian (an identity)."""
    comp = dpe.ComposedDpEvent([dpe.GaussianDpEvent(1.1), dpe.GaussianDpEvent(6.0)])
    merged = merge_gaussians(comp)
    assert isinstance(merged, dpe.GaussianDpEvent)
    a = epsilon(dpe.SelfComposedDpEvent(comp, 20), DELTA, "rdp")
    b = epsilon(dpe.SelfComposedDpEvent(merged, 20), DELTA, "rdp")
    assert a == pytest.approx(b, rel=2e-3)
    # subsampled: RDP of the unmerged event equals RDP/PLD of the merged one
    raw = dpe.SelfComposedDpEvent(dpe.PoissonSampledDpEvent(0.1, comp), 50)
    ours = dpe.SelfComposedDpEvent(sampled(comp, "poisson", 0.1), 50)
    assert epsilon(ours, DELTA, "rdp") == pytest.approx(epsilon(raw, DELTA, "rdp"), rel=1e-9)
    assert epsilon(ours, DELTA, "pld") <= epsilon(raw, DELTA, "rdp")  # PLD is tighter


def test_unsupported_pairs_are_config_errors_naming_the_accountant() -> None:
    zc = dpe.SelfComposedDpEvent(dpe.ZCDpEvent(0.05), 10)  # distributed DP's event
    with pytest.raises(ConfigError, match='privacy.accountant = "rdp"') as e:
        check_supported(zc, "pld")
    assert e.value.key == "privacy.accountant"
    with pytest.raises(ConfigError, match="rdp"):
        epsilon(zc, DELTA, "pld")
    with pytest.raises(ConfigError, match="rdp"):
        calibrate_noise(
            lambda v: dpe.SelfComposedDpEvent(dpe.ZCDpEvent(1 / (2 * v * v)), 10),
            8.0, DELTA, "pld",
        )
    check_supported(zc, "rdp")  # supported: no error
    # distributed DP with a fixed cohort: zCDP with doubled sensitivity (4ρ), no amplification
    assert sampled(dpe.ZCDpEvent(0.05), "fixed", 0.5) == dpe.ZCDpEvent(rho=0.2)
    with pytest.raises(ConfigError):
        sampled(dpe.GaussianDpEvent(1.0), "stratified", 0.5)


def test_basis_states_relation_and_amplification() -> None:
    b = basis("fixed", 50, 100, secret_cohort=True)
    assert b["neighbouring_relation"] == RELATION == "add_or_remove_one_site"
    assert b["sampling_rate"] == 0.5 and "displac" in b["sensitivity"]
    assert b["amplification_holds_against_record_reader"]
    rec = basis("poisson", 10, 100, secret_cohort=True, cohort_recorded=True)
    assert not rec["amplification_holds_against_record_reader"] and not rec["amplified"]
    assert rec["epsilon_holds_against_record_reader"] and rec["cohorts_recorded"]
    assert "without" in rec["note"] and "none claimed" in rec["amplification"]
    assert not basis("poisson", 10, 100, secret_cohort=False)["amplification_holds_against_record_reader"]
    assert math.isclose(basis("fixed", 100, 100, False)["sampling_rate"], 1.0)


def _run_cfg(tmp_path, privacy: dict, federation: dict, aggregation: dict | None = None):  # type: ignore[no-untyped-def]
    from veil.federation.config import parse_config

    return parse_config({
        "name": "acct", "seed": 0, "rounds": 2, "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "sites": 10, "partition": "iid", "limit": 300},
        "model": {"name": "logreg"},
        "federation": {"dropout_rate": 0.0, **federation},
        "aggregation": aggregation or {},
        "privacy": {"enabled": True, "target_epsilon": 8.0, **privacy},
        "audit": {"log": False},
    })


def test_adaptive_clipping_with_poisson_cohorts_runs_under_pld(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 10 item 5: this used to crash with dp-accounting's UnsupportedEventError."""
    from veil.federation.build import build_federation

    cfg = _run_cfg(
        tmp_path,
        {"accountant": "pld", "client_level": {
            "enabled": True, "clip_norm": 0.5, "noise_multiplier": 1.5,
            "adaptive": {"target_quantile": 0.5, "count_stddev": 2.0}}},
        {"cohort_size": 4, "sampling": "poisson"},
    )
    res = build_federation(cfg).run()
    eps = [r["epsilon_client"] for r in res.rounds]
    assert 0 < eps[0] < eps[-1] <= 8.0 + 1e-6


def test_distributed_dp_with_pld_is_refused_naming_rdp(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from veil.federation.build import build_federation

    cfg = _run_cfg(
        tmp_path,
        {"accountant": "pld", "client_level": {"enabled": True, "clip_norm": 0.5,
                                                "mechanism": "distributed"}},
        {"cohort_size": 10, "sampling": "fixed"},
        {"summation": "secagg", "quantize_range": 0.5},
    )
    with pytest.raises(ConfigError, match='privacy.accountant = "rdp"') as e:
        build_federation(cfg).run()
    assert e.value.key == "privacy.accountant"
