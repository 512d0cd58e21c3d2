"""SecAggSum inside a Pipeline: exact modular sums, dropouts, aborts, byte counts."""

from __future__ import annotations

import numpy as np
import pytest

from veil.aggregation.base import EncodeContext, Pipeline, SumProtocol
from veil.aggregation.quantize import Quantize
from veil.aggregation.secagg import SecAggSum
from veil.crypto import SecureRng, ring
from veil.errors import AbortError, InsecureParametersError, LocalError


@pytest.mark.parametrize("k", [4, None, 100])
def test_secagg_sum_matches_plain_modular_sum(k) -> None:
    n, d, bits = 15, 40, 20
    gen = np.random.default_rng(1)
    rows = gen.integers(-(2**40), 2**40, (n, d))
    ids = np.arange(100, 100 + n)
    agg = SecAggSum(bits=bits, k=k, graph_key=b"veil/secagg/graph")  # a fixed graph
    assert isinstance(agg, SumProtocol)
    res = agg.aggregate(rows, ids, round=3, dropouts={101: "masked", 107: "unmask"})
    assert 101 not in res.survivors and 107 in res.survivors
    keep = np.isin(ids, res.survivors)
    assert np.array_equal(res.total, ring.reduce(rows[keep].sum(axis=0), bits))
    assert res.measurements["k"] == (4 if k == 4 else n - 1 if k == 100 else res.measurements["k"])
    packed = ring.packed_size(d, bits)
    assert all(res.bytes_sent[int(u)] > packed for u in res.survivors)


def test_pipeline_quantize_secagg_round_trip() -> None:
    n, d = 12, 300
    gen = np.random.default_rng(2)
    upd = gen.normal(0, 0.3, (n, d))
    q = Quantize(clip=1.0, bits=32)
    p = Pipeline([q], SecAggSum(bits=32, k=6))
    ctx = EncodeContext(0, np.arange(n), np.ones(n), SecureRng.from_seed(0, "t"), n)
    _, res = p.run_round(p.init(), upd, ctx, dropouts={3: "share"})
    assert 3 not in res.survivors
    truth = np.clip(upd, -1, 1)[np.arange(n) != 3].sum(axis=0)
    assert np.max(np.abs(res.aggregate - truth)) < n / q.scale(n)
    assert res.measurements["survivors"] == n - 1


def test_pipeline_abort_gives_no_result() -> None:
    n = 6
    p = Pipeline([Quantize(clip=1.0)], SecAggSum(bits=32, k=5))
    ctx = EncodeContext(0, np.arange(n), np.ones(n), SecureRng.from_seed(0, "t"), n)
    with pytest.raises(AbortError, match="stage masked: 2 of 6"):
        p.run_round(p.init(), np.zeros((n, 4)), ctx, dropouts={0: "masked", 1: "masked",
                                                                2: "share", 3: "advertise"})


def test_secagg_sum_refuses_floats_and_unsafe_threshold() -> None:
    with pytest.raises(LocalError, match="Quantize"):
        SecAggSum().aggregate(np.zeros((3, 2)), np.arange(3), 0)
    with pytest.raises(InsecureParametersError):
        SecAggSum(k=4, threshold=2).aggregate(np.zeros((6, 2), np.int64), np.arange(6), 0)


def test_stage_deadline_drops_slow_sites() -> None:
    res = SecAggSum(k=4, stage_deadline_s=1e-9, threshold=3).aggregate
    with pytest.raises(AbortError, match="stage advertise: 0 of 6"):
        res(np.zeros((6, 2), np.int64), np.arange(6), 0)


def test_a_sum_no_honest_cohort_could_produce_is_refused() -> None:
    from veil.errors import InvalidUpdateError

    n, d, bound = 8, 5, 1000
    gen = np.random.default_rng(3)
    rows = gen.integers(-bound, bound + 1, (n, d))
    agg = SecAggSum(bits=24, k=7, input_bound=bound)
    res = agg.aggregate(rows, np.arange(n), 0)
    assert np.array_equal(ring.to_signed(res.total, 24), rows.sum(axis=0))
    evil = rows.copy()
    evil[5, 2] = 2**22  # a site that skipped quantisation
    with pytest.raises(InvalidUpdateError, match="more than 8 honest sites") as err:
        agg.aggregate(evil, np.arange(n), 0)
    assert "aggregate is refused" in str(err.value)
