"""Tiered protection: a light summation most rounds, CKKS on periodic and final rounds."""

from __future__ import annotations

import numpy as np
import pytest

from veil.aggregation import PlainSum
from veil.aggregation.ckks_sum import CkksSum
from veil.aggregation.tiered import TieredSum
from veil.app import train
from veil.crypto import ring as zring
from veil.errors import ConfigError
from veil.federation.config import parse_config


def test_schedule_and_delegation() -> None:
    t = TieredSum(PlainSum(), CkksSum(bits=32, max_sites=5), every=3, final_round=6)
    assert [t.summation_for(r) for r in range(7)] == [
        "plain_sum", "plain_sum", "ckks", "plain_sum", "plain_sum", "ckks", "ckks"
    ]
    assert t.stages_for(0) == ("before_send",) and t.stages_for(2) == CkksSum.stages
    x = np.arange(4 * 10, dtype=np.int64).reshape(4, 10) - 7
    light, strong = t.aggregate(x, np.arange(4), 0), t.aggregate(x, np.arange(4), 2)
    assert light.measurements["strong"] == 0.0 and strong.measurements["strong"] == 1.0
    assert "ckks/server_time_s" in strong.measurements
    # both tiers give the same sum of the same ring rows
    assert np.array_equal(zring.to_signed(np.asarray(light.total), 32),
                          zring.to_signed(strong.total, 32))
    with pytest.raises(ConfigError):
        TieredSum(PlainSum(), PlainSum())


def test_tiered_run_records_which_round_used_which(tmp_path) -> None:
    cfg = parse_config({
        "name": "tiered", "seed": 1, "rounds": 4, "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "sites": 6, "partition": "iid"},
        "model": {"name": "logreg"},
        "federation": {"cohort_size": 5, "dropout_rate": 0.2},
        "aggregation": {"summation": "plain", "strong_summation": "ckks", "strong_every": 3,
                        "strong_final": True, "quantize_range": 0.5},
    })
    out = train(cfg)
    rounds = out.result.rounds
    assert [r["summation"] for r in rounds] == ["plain_sum", "plain_sum", "ckks", "ckks"]
    ck = [r["bytes_per_site_mean"] for r in rounds if r["summation"] == "ckks"]
    pl = [r["bytes_per_site_mean"] for r in rounds if r["summation"] == "plain_sum"]
    assert min(ck) > max(pl)  # ciphertexts, not plaintext rows, were sent in CKKS rounds
    assert out.record["pipeline"][-1] == "tiered"
    assert "Tiered protection" in out.record["threat_model"]
    assert out.final_accuracy is not None and out.final_accuracy > 0.5


def test_each_tier_vets_the_chain_in_front_of_it() -> None:
    from veil.aggregation import Pipeline, UniformMean
    from veil.aggregation.robust import RobustSum

    Pipeline([UniformMean()], TieredSum(PlainSum(), PlainSum(), every=2))  # fits both tiers
    # a robust rule returns a mean: the mean stage would divide it again in its rounds
    with pytest.raises(ConfigError, match="robust mean"):
        Pipeline([UniformMean()], TieredSum(PlainSum(), RobustSum("median"), every=2))
