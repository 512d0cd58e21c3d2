"""Secret cohorts, released measurements and honest-noise sizing for client-level DP."""

from __future__ import annotations

import numpy as np
import pytest

from veil.crypto.prg import SecureRng
from veil.errors import ConfigError, InsecureParametersError
from veil.privacy.release import (
    check_ddg_sigma,
    draw_cohort,
    honest_survivors,
    release_measurements,
)

UNNOISED = ("clip/clipped", "clip/norm", "quantize/clipped_fraction")


def test_fixed_cohorts_are_uniform_subsets_and_poisson_has_rate_q() -> None:
    """2,000 fixed-seed draws of 3 of 10: inclusion 0.3 per site (sd 0.010; tol 0.04)."""
    rng = SecureRng.from_seed(1, "test-cohorts")
    counts = np.zeros(10)
    for _ in range(2000):
        c = draw_cohort(rng, 10, 3, "fixed")
        assert len(c) == 3 and len(set(c.tolist())) == 3 and np.all(np.diff(c) > 0)
        counts[c] += 1
    assert np.all(np.abs(counts / 2000 - 0.3) < 0.04)
    sizes = [len(draw_cohort(rng, 200, 20, "poisson")) for _ in range(500)]
    assert abs(np.mean(sizes) - 20) < 1.0  # sd of the mean 0.19
    with pytest.raises(ConfigError):
        draw_cohort(rng, 10, 11, "fixed")


def test_an_adversary_with_the_seed_cannot_recompute_secret_cohorts() -> None:
    """The observer knows the run seed and every seeded generator veil has used for
    cohorts; with cohorts from a fresh CSPRNG none of them reproduces the rounds."""
    seed, n, m, rounds = 7, 30, 10, 20
    secret = [draw_cohort(SecureRng.fresh(), n, m, "fixed") for _ in range(rounds)]

    def guesses(r: int) -> list[np.ndarray]:
        old = np.random.default_rng([seed, r, 0xC0])  # the pre-fix runtime's generator
        return [
            np.sort(old.choice(n, size=m, replace=False)),
            draw_cohort(SecureRng.from_seed(seed, f"cohort/{r}"), n, m, "fixed"),
            draw_cohort(SecureRng.from_seed(seed, "cohort"), n, m, "fixed"),
        ]

    hits = sum(any(np.array_equal(g, secret[r]) for g in guesses(r)) for r in range(rounds))
    assert hits == 0  # chance of any hit: 3 · 20 / C(30, 10) ≈ 2e-6
    # control: the same adversary does recompute cohorts drawn from the seed
    seeded = [draw_cohort(SecureRng.from_seed(seed, f"cohort/{r}"), n, m, "fixed")
              for r in range(rounds)]
    assert all(any(np.array_equal(g, seeded[r]) for g in guesses(r)) for r in range(rounds))


def _dp_round_measurements(tmp_path, mechanism: str) -> dict:  # type: ignore[no-untyped-def]
    """One real round of a client-level DP pipeline; the raw measurements it produced."""
    from veil.federation.build import build_federation
    from veil.federation.config import parse_config

    cl = {"enabled": True, "clip_norm": 0.5, "mechanism": mechanism,
          "noise_multiplier": 1.0 if mechanism == "central" else None}
    cfg = parse_config({
        "name": f"dp-{mechanism}", "seed": 0, "rounds": 1, "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "sites": 20, "partition": "iid", "limit": 400},
        "model": {"name": "logreg"},
        "federation": {"cohort_size": 20, "dropout_rate": 0.0},
        "aggregation": {"summation": "secagg", "quantize_range": 0.5,
                        "clip_norm": 1.0},
        "privacy": {"enabled": True, "target_epsilon": 8.0, "accountant": "rdp",
                    "client_level": cl},
        "audit": {"log": False},
    })
    fed = build_federation(cfg)
    assert fed.dp_mechanism == mechanism  # the record keeps only released numbers...
    fed.dp_mechanism = None  # ...here we want everything the pipeline computed
    res = fed.run()
    return dict(res.rounds[0]["measurements"])


@pytest.mark.parametrize("mechanism", ["central", "distributed"])
def test_released_measurements_of_a_dp_round_hold_no_unnoised_statistic(
    tmp_path, mechanism: str  # type: ignore[no-untyped-def]
) -> None:
    raw = _dp_round_measurements(tmp_path, mechanism)
    assert any(k in raw for k in UNNOISED)  # the pipeline does compute them...
    out = release_measurements(raw, mechanism)
    assert not any(k in out for k in UNNOISED)  # ...and they are not released
    if mechanism == "central":
        assert "quantize/beyond_signal_fraction" not in out  # computed before the noise
    stages = {k.split("/")[0] for k in out}
    assert stages <= {"dp_fedavg", "distributed_dp", "uniform_mean", "quantize", "secagg",
                      "survivors", "rejected_sites"}
    assert release_measurements(raw, mechanism, debug=True) == raw
    assert release_measurements(raw, None) == raw


def test_distributed_noise_counts_honest_survivors_only() -> None:
    # 50 sites, 20 % expected dropout, up to 10 % colluding with the server: 40 - 5 = 35
    assert honest_survivors(50, 0.2, 0.1) == 35
    assert honest_survivors(50, 0.2, 0.0) == 40
    with pytest.raises(ConfigError, match="honest survivor"):
        honest_survivors(4, 0.5, 0.5)
    check_ddg_sigma(0.5)
    with pytest.raises(InsecureParametersError):
        check_ddg_sigma(0.49)


def test_distributed_dp_stage_sizes_and_charges_for_honest_survivors() -> None:
    from types import SimpleNamespace

    from veil.aggregation.distributed_dp import DistributedDP, ddg_epsilon

    kw = dict(bits=32, scale=1000.0, headroom=2**30, l2_clip=0.5, noise_multiplier=2.0,
              expected_dropout=0.2)
    plain, honest = DistributedDP(**kw), DistributedDP(**kw, corrupt_fraction=0.1)
    s0, d0 = plain.site_sigma(50, 100)
    s1, d1 = honest.site_sigma(50, 100)
    assert d0 == d1 and s1 / s0 == pytest.approx((40 / 35) ** 0.5)  # 40 vs 35 honest sites
    ctx = SimpleNamespace(cohort_size=50, survivors=list(range(40)))
    rho = [st.decode(None, np.zeros(100), ctx)[2]["rho"] for st in (plain, honest)]
    # the colluders' noise is not counted: 35 honest survivors' worth, per-site σ larger
    assert rho[1] == pytest.approx(ddg_epsilon(d1, s1, 35, 100) ** 2 / 2)
    assert ddg_epsilon(d0, 0.49, 40, 100) == float("inf")  # σ < 1/2: theorem does not apply
