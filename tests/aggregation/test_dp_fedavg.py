"""DP-FedAvg transforms: clipping bound, noise std (statistical), fixed denominator,
adaptive clip."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event as dpe

from veil.aggregation.base import DecodeContext, EncodeContext, Pipeline
from veil.aggregation.dp_fedavg import AdaptiveDPFedAvg, DPFedAvg
from veil.aggregation.plain import PlainSum
from veil.crypto.prg import SecureRng
from veil.errors import ConfigError, LocalError


def _ectx(n: int) -> EncodeContext:
    return EncodeContext(round=0, site_ids=np.arange(n), weights=np.ones(n), cohort_size=n)


def _dctx(n: int, seed: int = 0) -> DecodeContext:
    return DecodeContext(
        round=0, survivors=np.arange(n), cohort_size=n, rng=SecureRng.from_seed(seed, "t")
    )


@pytest.mark.parametrize("clip", [0.01, 1.0, 7.5])
def test_encode_bounds_every_row(clip: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 33)) * rng.uniform(0, 20, size=(50, 1))
    x[0] = 0.0
    t = DPFedAvg(clip, 1.0, 10)
    enc, _, meas = t.encode(t.init(), [None] * len(x), x, _ectx(50))
    norms = np.linalg.norm(enc, axis=1)
    assert np.all(norms <= clip * (1 + 1e-12))
    small = np.linalg.norm(x, axis=1) <= clip
    np.testing.assert_allclose(enc[small], x[small])  # short rows are untouched
    assert meas == {}  # nothing non-private is reported per site


def test_noise_std_statistical() -> None:
    """Noise on the sum has std z·C.

    N = 40000 coordinates, sample-std tolerance 5/sqrt(2N) ≈ 1.8%.
    """
    z, c, m, d = 1.3, 0.7, 8.0, 40_000
    t = DPFedAvg(c, z, m)
    state, mean, meas, ev = t.decode(t.init(), np.zeros(d), _dctx(1, seed=3))
    noise = mean * m
    assert abs(noise.std() / (z * c) - 1) < 5 / math.sqrt(2 * d)
    assert abs(noise.mean()) < 5 * z * c / math.sqrt(d)
    assert meas["noise_std"] == pytest.approx(z * c)
    assert ev == dpe.GaussianDpEvent(z)
    assert state == t.init()


def test_fixed_denominator_and_pipeline() -> None:
    """The mean divides by the expected cohort, not the survivors; the event comes out."""
    x = np.full((3, 4), 0.1)
    p = Pipeline([DPFedAvg(clip_norm=10.0, noise_multiplier=0.0, expected_cohort=5)], PlainSum())
    st, res = p.run_round(p.init(), x, _ectx(3), server_rng=SecureRng.from_seed(0, "s"))
    np.testing.assert_allclose(res.aggregate, np.full(4, 0.3 / 5))
    assert res.dp_events == (dpe.GaussianDpEvent(0.0),)


def test_noise_needs_rng() -> None:
    t = DPFedAvg(1.0, 1.0, 4)
    with pytest.raises(LocalError, match="SecureRng"):
        t.decode(t.init(), np.zeros(3), DecodeContext(0, np.arange(2), 2, None))


def test_adaptive_indicator_and_update() -> None:
    """All norms below C ⇒ b̂ ≈ 1 ⇒ C shrinks by exp(-η(1-γ)); event includes the count."""
    m = 20
    t = AdaptiveDPFedAvg(initial_clip=2.0, noise_multiplier=0.0, expected_cohort=m,
                         target_quantile=0.5, lr=0.2, count_stddev=1e-9)
    x = np.full((m, 3), 0.1)
    enc, _, _ = t.encode(t.init(), [None] * len(x), x, _ectx(m))
    assert enc.shape == (m, 4)
    np.testing.assert_allclose(enc[:, -1], 0.5)
    st, mean, meas, ev = t.decode(t.init(), enc.sum(0), _dctx(m))
    np.testing.assert_allclose(mean, x[0])
    assert meas["unclipped_fraction_noised"] == pytest.approx(1.0, abs=1e-6)
    assert st.clip_norm == pytest.approx(2.0 * math.exp(-0.2 * 0.5), rel=1e-6)
    assert ev == dpe.ComposedDpEvent([dpe.GaussianDpEvent(0.0), dpe.GaussianDpEvent(2e-9)])
    # all clipped ⇒ b̂ ≈ 0 ⇒ C grows
    big = np.full((m, 3), 10.0)
    enc, _, _ = t.encode(t.init(), [None] * len(big), big, _ectx(m))
    np.testing.assert_allclose(enc[:, -1], -0.5)
    st, *_ = t.decode(t.init(), enc.sum(0), _dctx(m))
    assert st.clip_norm == pytest.approx(2.0 * math.exp(0.2 * 0.5), rel=1e-6)


def test_adaptive_default_count_noise() -> None:
    t = AdaptiveDPFedAvg(1.0, 1.0, expected_cohort=100)
    assert t.count_std == pytest.approx(5.0)
    assert t.round_event().events[1] == dpe.GaussianDpEvent(10.0)


@pytest.mark.parametrize(
    "kw", [dict(noise_multiplier=-1.0), dict(expected_cohort=0.0), dict(clip_norm=0.0),
           dict(noise_multiplier=math.inf)]
)
def test_rejects_impossible(kw) -> None:
    base = dict(clip_norm=1.0, noise_multiplier=1.0, expected_cohort=5.0)
    base.update(kw)
    with pytest.raises(ConfigError):
        DPFedAvg(**base)
