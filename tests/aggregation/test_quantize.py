"""Quantize: unbiased stochastic rounding within the documented error bound; no wrap."""

from __future__ import annotations

import numpy as np
import pytest

from veil.aggregation.base import DecodeContext, EncodeContext
from veil.aggregation.quantize import Quantize
from veil.crypto import SecureRng, ring
from veil.errors import ConfigError, LocalError


def _rngs(seed: int, n: int) -> list[SecureRng]:
    return [SecureRng.from_seed(seed, f"q/s{i}") for i in range(n)]


def _round_trip(q: Quantize, x: np.ndarray, seed: int = 0):
    n = x.shape[0]
    ctx = EncodeContext(0, np.arange(n), np.ones(n), None, n, _rngs(seed, n))
    enc, _, meas = q.encode(None, [None] * n, x, ctx)
    total = ring.reduce(enc.sum(axis=0), q.bits)
    _, dec, dmeas, ev = q.decode(None, total, DecodeContext(0, np.arange(n), n))
    return enc, dec, meas, dmeas, ev


def test_error_bound_statistically() -> None:
    """m = 10 sites, d = 20 000 coordinates, fixed seed. Stated tolerances: mean error
    within 6 standard errors of 0; empirical std ≤ 1.05 · √m/(2s); max error < m/s."""
    m, d = 10, 20_000
    x = np.random.default_rng(3).uniform(-1, 1, (m, d))
    q = Quantize(clip=1.0, bits=16, margin=1.0)
    enc, dec, *_ = _round_trip(q, x)
    err = dec - x.sum(axis=0)
    s = q.scale(m)
    bound_std = np.sqrt(m) / (2 * s)
    assert abs(err.mean()) < 6 * bound_std / np.sqrt(d)
    assert err.std() <= 1.05 * bound_std
    assert np.max(np.abs(err)) < m / s
    assert enc.min() >= -q.levels(m) and enc.max() <= q.levels(m)


def test_extremes_do_not_wrap_and_clipping_is_measured() -> None:
    m = 7
    q = Quantize(clip=0.5, bits=12, margin=1.0)
    x = np.full((m, 5), 3.0)
    x[:, 1] = -3.0
    _, dec, meas, dmeas, ev = _round_trip(q, x)
    assert np.allclose(dec[0], m * 0.5) and np.allclose(dec[1], -m * 0.5)
    assert np.all(meas["clipped_fraction"] == 1.0) and ev is None
    assert dmeas["beyond_signal_fraction"] == 0.0


def test_plain_int64_sums_decode_too_and_bad_configs() -> None:
    q = Quantize(clip=1.0, bits=32)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 6))
    ctx = EncodeContext(0, np.arange(4), np.ones(4), None, 4, _rngs(1, 4))
    enc, _, _ = q.encode(None, [None] * 4, x, ctx)
    _, dec, _, _ = q.decode(None, enc.sum(axis=0), DecodeContext(0, np.arange(4), 4))
    assert np.max(np.abs(dec - x.sum(axis=0))) < 4 / q.scale(4)
    with pytest.raises(ConfigError):
        Quantize(clip=1.0, bits=4).levels(100)
    with pytest.raises(ConfigError):
        Quantize(clip=0.0)
    with pytest.raises(LocalError, match="rng"):
        q.encode(None, [None] * 4, x, EncodeContext(0, np.arange(4), np.ones(4), None, 4))
