"""Robust rules on hand-checked inputs, their breakdown, anomaly scores, and the refusals
under secure summation (the server sees no single update there)."""

from __future__ import annotations

import numpy as np
import pytest

from veil.aggregation import (
    Clip,
    DPFedAvg,
    Pipeline,
    PlainSum,
    Quantize,
    RobustSum,
    ScreenedSum,
    SecAggSum,
    UniformMean,
    WeightedMean,
)
from veil.aggregation.anomaly import anomaly_scores, robust_z
from veil.aggregation.robust import coordinate_median, krum_scores, multi_krum, trimmed_mean
from veil.errors import AbortError, ConfigError
from veil.federation.build import build_pipeline
from veil.federation.config import parse_config

# ---------------------------------------------------------------- rules, by hand


def test_median_by_hand() -> None:
    rows = np.array([[1.0, 10.0], [2.0, 20.0], [100.0, -5.0]])
    assert coordinate_median(rows).tolist() == [2.0, 10.0]
    assert coordinate_median(np.array([[1.0], [3.0], [5.0], [100.0]])).tolist() == [4.0]


def test_trimmed_mean_by_hand() -> None:
    rows = np.array([[1.0, 40.0], [2.0, 30.0], [3.0, 20.0], [100.0, 10.0]])
    # beta = 0.25, n = 4: k = 1 dropped at each end of each coordinate
    assert trimmed_mean(rows, 0.25).tolist() == [2.5, 25.0]
    # beta = 0.2: k = floor(0.8) = 0, the plain mean
    assert trimmed_mean(rows, 0.2).tolist() == [26.5, 25.0]
    with pytest.raises(ConfigError, match="trim_fraction"):
        trimmed_mean(rows, 0.5)


def test_krum_by_hand() -> None:
    # 1-D points; n = 6, f = 1: each score sums the n - f - 2 = 3 nearest squared distances
    rows = np.array([[0.0], [1.0], [2.0], [3.0], [100.0], [-100.0]])
    s = krum_scores(rows, f=1)
    assert s[:4].tolist() == [14.0, 6.0, 6.0, 14.0]  # 1+4+9, 1+1+4, 1+1+4, 1+4+9
    assert s[4] == 97**2 + 98**2 + 99**2 and s[5] == 100**2 + 101**2 + 102**2
    agg, sel = multi_krum(rows, f=1, m=2)
    assert sel.tolist() == [1, 2] and agg.tolist() == [1.5]
    agg, sel = multi_krum(rows, f=1)  # m = n - f = 5: everyone but the worst
    assert sel.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(AbortError, match="more than 4"):
        krum_scores(rows[:4], f=1)


# ---------------------------------------------------------------- breakdown


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_huge_outliers_below_half_stay_bounded(rule: str) -> None:
    gen = np.random.default_rng(7)
    d, honest_n, f = 50, 7, 4  # 4 of 11 arbitrary rows (f < n/2; beta * n = 4.4 -> k = 4)
    honest = 1.0 + 0.1 * gen.standard_normal((honest_n, d))
    bad = 1e6 * gen.standard_normal((f, d))
    rows = np.concatenate([bad[:2], honest, bad[2:]])
    agg = RobustSum(rule, trim_fraction=0.4).combine(rows)[0]
    # every coordinate inside the honest rows' range, whatever the outliers are
    assert np.all(agg >= honest.min(0)) and np.all(agg <= honest.max(0))
    assert np.linalg.norm(rows.mean(0) - 1.0) > 1e5  # the mean is gone


def test_krum_picks_the_honest_cluster() -> None:
    gen = np.random.default_rng(3)
    d, n, f = 30, 12, 3
    rows = 0.5 + 0.05 * gen.standard_normal((n, d))
    bad = [2, 7, 11]
    rows[bad] = 5.0 + 1e-3 * gen.standard_normal((f, d))  # colluding, tightly packed
    agg, sel = multi_krum(rows, f=f)
    assert set(sel.tolist()) == set(range(n)) - set(bad)
    assert np.abs(agg - 0.5).max() < 0.1


# ---------------------------------------------------------------- anomaly scores


def test_robust_z_and_scores() -> None:
    z = robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    # median 3, MAD 1 -> scale 1.4826
    assert z.tolist() == pytest.approx([-2 / 1.4826, -1 / 1.4826, 0.0, 1 / 1.4826, 97 / 1.4826])
    gen = np.random.default_rng(0)
    u = np.ones((10, 20)) + 0.1 * gen.standard_normal((10, 20))
    u[3] *= -1.0  # points away
    u[8] *= 50.0  # too large
    sc = anomaly_scores(u)
    assert np.flatnonzero(sc.flagged(3.5)).tolist() == [3, 8]
    assert sc.cosine[3] < 0 < sc.cosine[0]
    assert not anomaly_scores(np.ones((5, 4))).flagged(3.5).any()  # identical: nobody


def test_screen_flags_drops_and_bounds() -> None:
    gen = np.random.default_rng(1)
    rows = 1.0 + 0.1 * gen.standard_normal((8, 6))
    rows[5] *= -4.0
    ids = np.arange(10, 18)
    report = ScreenedSum(PlainSum()).aggregate(rows, ids, 0)
    assert report.flagged == (15,) and 15 in report.survivors
    assert np.allclose(report.total, rows.sum(0), atol=1e-5)
    dropped = ScreenedSum(PlainSum(), drop=True).aggregate(rows, ids, 0)
    assert 15 not in dropped.survivors and dropped.bytes_sent[15] > 0
    assert np.allclose(dropped.total, np.delete(rows, 5, 0).sum(0), atol=1e-5)
    bound = ScreenedSum(PlainSum(), threshold=float("inf"), norm_bound=3.0).aggregate(rows, ids, 0)
    assert bound.flagged == (15,) and bound.measurements["over_bound"] == 1.0
    # under FedAvg weighting rows are [w*u, w]: scores read u back
    w = np.arange(1.0, 9.0)[:, None]
    weighted = ScreenedSum(PlainSum(), weight_column=True).aggregate(
        np.hstack([rows * w, w]), ids, 0
    )
    assert weighted.flagged == (15,)


# ---------------------------------------------------------------- chain and domain checks


def test_robust_mean_refuses_a_second_division_and_rings() -> None:
    Pipeline([Clip(1.0)], RobustSum("median"))  # fits
    for stage in (UniformMean(), WeightedMean()):
        with pytest.raises(ConfigError, match="robust mean, not a sum"):
            Pipeline([stage], RobustSum("median"))
    with pytest.raises(ConfigError, match="cannot follow"):
        Pipeline([Quantize(clip=1.0)], RobustSum("trimmed_mean"))
    with pytest.raises(ConfigError, match="sensitivity of a sum"):
        Pipeline([DPFedAvg(1.0, 1.0, 10)], RobustSum("multi_krum"))
    with pytest.raises(ConfigError, match="weight_column"):
        Pipeline([WeightedMean()], ScreenedSum(PlainSum()))
    with pytest.raises(ConfigError, match="unknown robust rule"):
        RobustSum("mode")


def test_build_pipeline_branches() -> None:
    def build(**agg: object) -> Pipeline:
        return build_pipeline(parse_config({"aggregation": agg}))

    assert build(robust="median").describe() == ["robust"]
    p = build(robust="multi_krum", anomaly=True, clip_norm=1.0)
    assert p.describe() == ["clip", "anomaly"] and p.summation.inner.rule == "multi_krum"
    assert build(anomaly=True).describe() == ["weighted_mean", "anomaly"]
    p = build(summation="secagg", clip_norm=1.0, aggregate_check=True)
    assert p.describe() == ["aggregate_check", "clip", "uniform_mean", "quantize", "secagg"]


# ---------------------------------------------------------------- refusal under secure sums


@pytest.mark.parametrize("summation", ["secagg", "ckks"])
@pytest.mark.parametrize(
    "agg", [{"robust": "median"}, {"robust": "multi_krum"}, {"anomaly": True},
            {"norm_bound": 2.0}]
)
def test_per_update_defences_refused_under_secure_summation(summation: str, agg: dict) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"aggregation": {"summation": summation, **agg}})
    msg = str(e.value)
    assert "never sees" in msg and summation in msg
    # it says what works there
    for fix in ("aggregation.clip_norm", "aggregate_check", "docs/secure-aggregation.md"):
        assert fix in msg
    # and what does work there is accepted
    parse_config({"aggregation": {"summation": summation, "clip_norm": 1.0,
                                  "aggregate_check": True}})


def test_screen_refuses_a_secure_inner_sum() -> None:
    with pytest.raises(ConfigError, match="never sees"):
        ScreenedSum(SecAggSum(bits=32))


def test_defences_refused_with_client_dp_and_small_cohorts() -> None:
    with pytest.raises(ConfigError, match="client-level DP"):
        parse_config({"aggregation": {"robust": "median"},
                      "privacy": {"enabled": True, "client_level": {
                                  "enabled": True, "noise_multiplier": 1.0}}})
    with pytest.raises(ConfigError, match="krum_f = 2 needs a cohort above 6"):
        parse_config({"data": {"sites": 6}, "aggregation": {"robust": "multi_krum",
                                                            "krum_f": 2}})
    with pytest.raises(ConfigError, match="needs aggregation.clip_norm"):
        parse_config({"aggregation": {"aggregate_check": True}})


def test_defences_refused_for_a_tiered_sum_with_secure_rounds() -> None:
    with pytest.raises(ConfigError, match="never sees"):
        parse_config({"aggregation": {"strong_summation": "secagg", "strong_final": True,
                                      "robust": "median"}})
