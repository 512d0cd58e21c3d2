"""One-run audit bound: valid on mechanisms with known ε (seeded repeated experiments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from veil.audit.canary import (
    epsilon_lower_bound,
    insert_canaries,
    load_canaries,
    one_run_audit,
    p_value_one_run,
    save_canaries,
)
from veil.errors import ConfigError


def test_p_value_matches_binomial_tail_when_delta_zero() -> None:
    from scipy.stats import binom

    q = math.exp(1.0) / (1 + math.exp(1.0))
    assert p_value_one_run(100, 50, 40, 1.0, 0.0) == pytest.approx(binom.sf(39, 50, q))


def test_p_value_monotone_in_eps_and_delta() -> None:
    ps = [p_value_one_run(1000, 200, 170, e, 1e-5) for e in (0.0, 0.5, 1.0, 2.0)]
    assert all(a <= b for a, b in zip(ps, ps[1:]))
    assert p_value_one_run(1000, 200, 170, 1.0, 1e-3) >= p_value_one_run(1000, 200, 170, 1.0, 0.0)


def test_bound_is_zero_for_chance_guessing_and_grows_with_accuracy() -> None:
    assert epsilon_lower_bound(1000, 1000, 500, 1e-5) == 0.0
    a = epsilon_lower_bound(1000, 1000, 700, 1e-5)
    b = epsilon_lower_bound(1000, 1000, 900, 1e-5)
    assert 0 < a < b
    # all r guesses right: bounded by r (q^r >= p), eps_hat ~ log of r / log(1/p)
    assert epsilon_lower_bound(1000, 100, 100, 0.0) < math.log(100)


def test_invalid_counts_raise() -> None:
    with pytest.raises(ConfigError):
        p_value_one_run(10, 20, 5, 1.0, 0.0)
    with pytest.raises(ConfigError):
        epsilon_lower_bound(10, 10, 5, 0.0, confidence=1.0)


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_randomized_response_never_above_true_eps_at_confidence(eps: float) -> None:
    """ε-DP randomized response on m canary bits, 200 seeded trials.

    The bound is valid at 95 %: at most 5 % of trials may exceed the true ε. The bound is
    conservative, so we require at most 10 of 200 (binomial(200, 0.05) exceeds 10 with
    probability ~0.42 only if the test were exactly tight; it is not), and that it is
    informative: the median ε̂ is at least 40 % of ε.
    """
    rng = np.random.default_rng(12345)
    m, trials, over, vals = 1000, 200, 0, []
    for _ in range(trials):
        s = rng.random(m) < 0.5
        keep = rng.random(m) < math.exp(eps) / (1 + math.exp(eps))
        out = np.where(keep, s, ~s)
        res = one_run_audit(out + 1e-3 * rng.random(m), s, delta=0.0, k_choices=[(m // 2, m // 2)])
        vals.append(res.epsilon_lower)
        over += res.epsilon_lower > eps
    assert over <= 10
    assert np.median(vals) >= 0.4 * eps


def _gauss_delta(eps: float, sigma: float) -> float:
    return float(
        norm.cdf(-eps * sigma + 1 / (2 * sigma))
        - math.exp(eps) * norm.cdf(-eps * sigma - 1 / (2 * sigma))
    )


def test_gaussian_mechanism_on_canary_bits_respects_eps_delta() -> None:
    """Gaussian mechanism (sensitivity 1 per canary) calibrated exactly to (ε=1, δ=1e-5)."""
    eps, delta = 1.0, 1e-5
    lo, hi = 0.5, 20.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _gauss_delta(eps, mid) > delta else (lo, mid)
    sigma = hi
    rng = np.random.default_rng(7)
    m, over, vals = 5000, 0, []
    for _ in range(40):
        s = rng.random(m) < 0.5
        out = s.astype(float) + rng.normal(0, sigma, m)
        r = one_run_audit(out, s, delta)
        vals.append(r.epsilon_lower)
        over += r.epsilon_lower > eps
    assert over <= 2  # 95 % confidence; 40 trials
    # A non-private mechanism (no noise) is caught with a large ε̂.
    s = rng.random(m) < 0.5
    assert one_run_audit(s.astype(float), s, delta).epsilon_lower > 3.0


def test_insert_canaries_is_deterministic_and_consistent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = np.arange(100) % 5
    x1, y1, c1 = insert_canaries(x, y, 20, seed=3, n_classes=5)
    x2, y2, c2 = insert_canaries(x, y, 20, seed=3, n_classes=5)
    assert np.array_equal(x1, x2) and np.array_equal(c1.included, c2.included)
    assert len(y1) == 80 + c1.included.sum()
    # canaries carry a wrong label; included ones are in the data, excluded ones are not
    rows = {tuple(r): lab for r, lab in zip(x1.tolist(), y1.tolist())}
    for xc, yc, inc in zip(c1.x.tolist(), c1.y.tolist(), c1.included):
        assert yc != int(xc[0] // 2) % 5
        assert (tuple(xc) in rows) == bool(inc)
        if inc:
            assert rows[tuple(xc)] == yc
    save_canaries(tmp_path / "c.npz", c1)
    c3 = load_canaries(tmp_path / "c.npz")
    assert np.array_equal(c3.included, c1.included) and c3.seed == 3
    with pytest.raises(ConfigError):
        insert_canaries(x, y, 80, seed=0, n_classes=5)


def test_one_coin_changes_one_example_at_one_site() -> None:
    """Neighbouring canary runs differ by one example at one fixed site, nothing else."""
    from veil.audit.canary import canary_parts
    from veil.data import partition

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    y = rng.integers(0, 4, 300)
    x1, y1, c1 = insert_canaries(x, y, 30, seed=9, n_classes=4, n_sites=5)
    base = partition(y1[: c1.base_size], 5, "dirichlet", 0.5, seed=1)
    i = int(np.flatnonzero(c1.included)[0])
    # the neighbouring run: the same canaries with coin i flipped (withheld)
    c2 = type(c1)(c1.x, c1.y, c1.included.copy(), c1.seed, c1.site, c1.base_size)
    c2.included[i] = False
    x2 = np.concatenate([x1[: c1.base_size], c2.x[c2.included]])
    sites1 = [{tuple(r) for r in x1[p].tolist()} for p in canary_parts(base, c1)]
    sites2 = [{tuple(r) for r in x2[p].tolist()} for p in canary_parts(base, c2)]
    diff = [a ^ b for a, b in zip(sites1, sites2)]
    assert [len(d) for d in diff].count(1) == 1 and sum(len(d) for d in diff) == 1
    assert diff[int(c1.site[i])] == {tuple(c1.x[i].tolist())}
    # the normal data's partition does not depend on any coin
    assert c1.base_size == 270 and np.array_equal(x1[:270], x2[:270])


def test_maximum_detectable_epsilon_and_canaries_needed() -> None:
    from veil.audit.canary import canaries_for, max_epsilon_lower

    top = max_epsilon_lower(100, 1e-5)
    assert 2.9 < top < 3.1  # 100 canaries cannot show ε̂ above ~3.01
    s = np.r_[np.ones(50), np.zeros(50)]
    res = one_run_audit(s, s.astype(bool), 1e-5)  # a perfect attack reaches the maximum
    assert res.epsilon_max == pytest.approx(top) and res.epsilon_lower == pytest.approx(top)
    m = canaries_for(3.0, 1e-5)
    assert m is not None and m % 2 == 0
    assert max_epsilon_lower(m, 1e-5) > 3.0 >= max_epsilon_lower(m - 2, 1e-5)
    assert canaries_for(8.0, 1e-5, limit=4096) is None  # not detectable with few canaries
    assert max_epsilon_lower(3, 1e-5) == 0.0 and one_run_audit(np.ones(3), np.ones(3, bool), 0.0)
