from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.aggregation import (
    Clip,
    EncodeContext,
    Pipeline,
    PlainSum,
    UniformMean,
    WeightedMean,
    l2_clip,
)
from veil.errors import AbortError, InvalidUpdateError, LocalError


def _ctx(n: int, weights=None) -> EncodeContext:
    return EncodeContext(
        round=0,
        site_ids=np.arange(n),
        weights=np.ones(n) if weights is None else weights,
        cohort_size=n,
    )


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.integers(1, 8), st.integers(1, 20), st.floats(0.01, 10.0))
def test_clip_bounds_norm_and_keeps_small(n: int, d: int, c: float) -> None:
    rng = np.random.default_rng(n * 100 + d)
    u = rng.normal(size=(n, d)) * rng.uniform(0.001, 5, size=(n, 1))
    out, norms, was = l2_clip(u, c)
    assert (np.linalg.norm(out, axis=1) <= c * (1 + 1e-9)).all()
    small = norms <= c
    np.testing.assert_allclose(out[small], u[small])
    # direction is preserved
    cos = (out * u).sum(1) / (np.linalg.norm(out, axis=1) * norms)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-9)


def test_weighted_mean_is_fedavg() -> None:
    rng = np.random.default_rng(0)
    u = rng.normal(size=(4, 6))
    w = np.array([10.0, 1.0, 5.0, 2.0])
    p = Pipeline([WeightedMean()], PlainSum(wire_float_dtype="float64"))
    _, res = p.run_round(p.init(), u, _ctx(4, w))
    np.testing.assert_allclose(res.aggregate, (u * w[:, None]).sum(0) / w.sum())


def test_dropouts_excluded_and_bytes_counted() -> None:
    u = np.arange(12, dtype=np.float64).reshape(3, 4)
    p = Pipeline([Clip(100.0), UniformMean()], PlainSum())
    _, res = p.run_round(p.init(), u, _ctx(3), dropouts={1: "before_send"})
    np.testing.assert_allclose(res.aggregate, (u[0] + u[2]) / 2)
    assert list(res.survivors) == [0, 2]
    assert res.bytes_sent == {0: 4 * 4 + 16, 2: 4 * 4 + 16}
    assert res.measurements["clip/clipped"] == 0.0


def test_fixed_denominator_mean() -> None:
    u = np.ones((3, 2))
    p = Pipeline([UniformMean(fixed_denominator=10)], PlainSum())
    _, res = p.run_round(p.init(), u, _ctx(3))
    np.testing.assert_allclose(res.aggregate, 0.3)


def test_nan_rows_rejected_others_aggregated() -> None:
    u = np.ones((3, 2))
    u[1, 0] = np.nan
    p = Pipeline([WeightedMean()], PlainSum())
    _, res = p.run_round(p.init(), u, _ctx(3))
    assert list(res.survivors) == [0, 2] and res.measurements["rejected_sites"] == 1
    np.testing.assert_allclose(res.aggregate, 1.0)
    with pytest.raises(InvalidUpdateError):
        p.run_round(p.init(), np.full((2, 2), np.inf), _ctx(2))


def test_all_dropped_aborts_and_bad_shapes() -> None:
    p = Pipeline([WeightedMean()], PlainSum())
    with pytest.raises(AbortError):
        p.run_round(
            p.init(), np.ones((2, 2)), _ctx(2), dropouts={0: "before_send", 1: "before_send"}
        )
    with pytest.raises(LocalError):
        p.run_round(p.init(), np.ones(3), _ctx(1))
    with pytest.raises(LocalError, match="unique"):
        Pipeline([WeightedMean(), WeightedMean()], PlainSum())


def test_typed_state_access() -> None:
    p = Pipeline([Clip(1.0), WeightedMean()], PlainSum())
    s = p.init()
    assert p.state_of(s, Clip) is None and p.state_of(s, "weighted_mean") is None
    with pytest.raises(LocalError):
        p.state_of(s, UniformMean)
    assert "clip → weighted_mean → plain_sum" in repr(p)
