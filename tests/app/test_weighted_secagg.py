"""Example-weighted FedAvg under SecAgg+: the weight travels under the mask with the update."""

from __future__ import annotations

import numpy as np
import pytest

from veil.aggregation import EncodeContext
from veil.crypto import SecureRng
from veil.errors import ConfigError
from veil.federation import build_pipeline
from veil.federation.config import parse_config


def _cfg(**agg):
    return parse_config({"data": {"sites": 8}, "aggregation": agg})


def test_weighted_secagg_equals_weighted_plain_fedavg() -> None:
    n, d = 8, 200
    gen = np.random.default_rng(3)
    upd = gen.normal(0, 0.2, (n, d))
    w = np.array([400.0, 12.0, 90.0, 7.0, 250.0, 33.0, 61.0, 150.0])  # very unequal sites
    ctx = EncodeContext(0, np.arange(n), w, SecureRng.from_seed(0, "t"), n)
    sec = build_pipeline(_cfg(summation="secagg", weighted=True, quantize_range=1.0),
                         max_weight=float(w.max()))
    assert [s.name for s in sec.chain.stages] == ["weighted_mean", "quantize"]
    _, res = sec.run_round(sec.init(), upd, ctx)
    truth = (upd * w[:, None]).sum(0) / w.sum()
    # quantisation: each row's coordinate is off by < 1/s, the sum by < n/s; the weight
    # column likewise, so the ratio is off by a few n/s relative to a total weight of
    # Σ w/W >= 1 (tolerance 4 n/s, s = L/range)
    q = sec.chain.stages[-1]
    tol = 4 * n / q.scale(n)
    assert np.max(np.abs(res.aggregate - truth)) < tol
    plain = build_pipeline(_cfg(), max_weight=float(w.max()))
    _, ref = plain.run_round(plain.init(), upd, ctx)
    np.testing.assert_allclose(ref.aggregate, truth, atol=1e-6)
    # and it is really the weighted mean, not the unweighted one
    assert np.max(np.abs(upd.mean(0) - truth)) > 100 * tol


def test_default_under_secagg_stays_unweighted() -> None:
    p = build_pipeline(_cfg(summation="secagg"), max_weight=10.0)
    assert [s.name for s in p.chain.stages] == ["uniform_mean", "quantize"]
    p = build_pipeline(_cfg(weighted=False))  # opt-out with a plain sum
    assert [s.name for s in p.chain.stages] == ["uniform_mean"]


def test_weighted_refused_with_dp_and_max_weight_without_weighted() -> None:
    with pytest.raises(ConfigError, match="does not go with DP"):
        parse_config({"aggregation": {"weighted": True},
                      "privacy": {"enabled": True, "target_epsilon": 4.0,
                                  "client_level": {"enabled": True}}})
    with pytest.raises(ConfigError, match="max_weight is for"):
        parse_config({"aggregation": {"max_weight": 100.0, "summation": "secagg"}})


def test_weighted_secagg_without_bound_names_the_key() -> None:
    with pytest.raises(ConfigError, match="aggregation.max_weight"):
        build_pipeline(_cfg(summation="secagg", weighted=True))


def test_site_over_declared_bound_is_capped_and_measured() -> None:
    n, d = 4, 10
    upd = np.full((n, d), 0.5)
    w = np.array([10.0, 10.0, 10.0, 50.0])
    sec = build_pipeline(_cfg(summation="secagg", weighted=True, max_weight=20.0))
    ctx = EncodeContext(0, np.arange(n), w, SecureRng.from_seed(1, "t"), n)
    _, res = sec.run_round(sec.init(), upd, ctx)
    assert res.measurements["weighted_mean/weight_capped"] == pytest.approx(0.25)
    np.testing.assert_allclose(res.aggregate, 0.5, atol=1e-4)


def test_weighted_secagg_run_end_to_end(tmp_path) -> None:
    from veil.app import train

    base = {"rounds": 3, "output_dir": str(tmp_path), "model": {"name": "logreg"},
            "data": {"sites": 4, "partition": "quantity"}}  # unequal site sizes
    plain = train(parse_config({**base, "name": "plain"}))
    sec = train(parse_config({**base, "name": "sec",
                              "aggregation": {"summation": "secagg", "weighted": True}}))
    assert sec.record["pipeline"] == ["weighted_mean", "quantize", "secagg"]
    assert plain.record["pipeline"] == ["weighted_mean", "plain_sum"]
    # the same weighted FedAvg; only the quantisation differs (final accuracy within 0.02
    # on 360 test digits: a handful of predictions)
    assert abs(sec.final_accuracy - plain.final_accuracy) < 0.02

