"""Compression stages: QSGD is unbiased, error feedback loses nothing, random-k under
SecAgg+ is the plaintext random-k sum, top-k is refused where it does not compose, and the
bytes counted are the payload's real length."""

from __future__ import annotations

import math

import numpy as np
import pytest

from veil.aggregation import (
    Chain,
    DPFedAvg,
    EncodeContext,
    Pipeline,
    PlainSum,
    Quantize,
    SecAggSum,
    UniformMean,
    WeightedMean,
)
from veil.aggregation.payload import HEADER_BYTES, PayloadSum, pack_codes, unpack_codes
from veil.aggregation.qsgd import QSGD
from veil.aggregation.randk import RandK
from veil.aggregation.topk import TopK
from veil.crypto import SecureRng
from veil.errors import ConfigError, LocalError


def _ctx(n: int, r: int = 0, seed: int = 1, weights=None) -> EncodeContext:
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    rngs = [SecureRng.from_seed(seed, f"site{i}/round{r}") for i in range(n)]
    return EncodeContext(r, np.arange(n), w, None, n, rngs)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_qsgd_own_scale_is_unbiased(bits: int) -> None:
    """The mean of T independent quantisations of one row is within 5 standard errors of
    the row in every coordinate (per-coordinate variance ≤ s²/L², seeded streams)."""
    d, trials = 64, 400
    v = np.random.default_rng(0).uniform(-1.0, 1.0, d)
    q = QSGD(bits)
    enc, _, _ = q.encode(None, [None] * trials, np.tile(v, (trials, 1)), _ctx(trials))
    s = float(np.float32(np.abs(v).max()))
    levels = (1 << bits) - 1
    assert set(np.unique(np.rint((enc / s + 1) * levels / 2))) <= set(range(levels + 1))
    stderr = s / levels / math.sqrt(trials)
    assert np.abs(enc.mean(axis=0) - v).max() < 5 * stderr
    if bits == 1:  # one bit is a stochastic sign: not a deterministic one
        assert 0 < (enc[:, 0] > 0).mean() < 1


def test_qsgd_shared_scale_under_secagg_is_exact_and_unbiased() -> None:
    """The secure sum of the codes decodes to the sum of what each site's codes mean, and
    that is unbiased around the true mean (shared range R, 5 standard errors)."""
    n, d = 5, 200
    u = np.random.default_rng(1).uniform(-0.4, 0.4, (n, d))
    q = QSGD(3, scale=0.5, cohort_bound=n)
    assert q.ring_bits == 6 and q.domain(Chain([UniformMean()]).output).bits == 6  # 5·7 < 2^6
    pipe = Pipeline([UniformMean(), q], SecAggSum(bits=q.ring_bits))
    codes, _, _ = q.encode(None, [None] * n, u, _ctx(n))
    _, res = pipe.run_round(pipe.init(), u, _ctx(n))
    expect = (0.5 * (2.0 * codes / q.levels - 1.0)).mean(axis=0)
    np.testing.assert_allclose(res.aggregate, expect, rtol=0, atol=1e-12)
    # over many seeds the decoded mean centres on the true mean
    runs = np.stack([pipe.run_round(pipe.init(), u, _ctx(n, seed=s))[1].aggregate
                     for s in range(2, 42)])
    stderr = 0.5 / q.levels / math.sqrt(n * 40)
    assert np.abs(runs.mean(axis=0) - u.mean(axis=0)).max() < 5 * stderr


@pytest.mark.parametrize("stage", [TopK(0.05, passthrough=1), RandK(0.05, 120, seed=4)])
def test_error_feedback_loses_nothing(stage) -> None:
    """Σ_rounds sent + kept residual = Σ_rounds inputs, at every site."""
    n, d, rounds = 3, 120, 6
    g = np.random.default_rng(2)
    states: list = [None] * n
    sent_total = np.zeros((n, d))
    in_total = np.zeros((n, d))
    for r in range(rounds):
        u = g.normal(0, 1, (n, d))
        rows = np.concatenate([u, np.ones((n, 1))], axis=1) if isinstance(stage, TopK) else u
        out, states, meas = stage.encode(None, states, rows, _ctx(n, r))
        if isinstance(stage, TopK):
            assert (np.count_nonzero(out[:, :d], axis=1) <= stage.k(d)).all()
            np.testing.assert_array_equal(out[:, d], 1.0)  # the weight passes untouched
            sent = out[:, :d]
        else:
            sent = np.zeros((n, d))
            sent[:, stage.support(r)] = out
        sent_total += sent
        in_total += u
        assert meas["residual_norm"].shape == (n,)
    residual = np.stack(states)
    np.testing.assert_allclose(sent_total + residual, in_total, rtol=0, atol=1e-9)
    assert np.abs(residual).max() > 0  # something is still waiting to be sent


def test_randk_under_secagg_equals_plaintext_randk() -> None:
    """All sites keep the same coordinates: SecAgg+ returns exactly the plaintext sum of
    the same quantised rows, zero off the shared support, close to the true masked mean."""
    n, d = 5, 400
    u = np.random.default_rng(3).uniform(-0.3, 0.3, (n, d))
    rk = RandK(0.1, d, seed=9, error_feedback=False)

    def pipe(summation):
        return Pipeline([rk, UniformMean(), Quantize(clip=0.5, bits=32)], summation)

    secure, plain = pipe(SecAggSum(bits=32)), pipe(PlainSum())
    _, a = secure.run_round(secure.init(), u, _ctx(n, r=2))
    _, b = plain.run_round(plain.init(), u, _ctx(n, r=2))
    np.testing.assert_array_equal(a.aggregate, b.aggregate)
    support = rk.support(2)
    assert len(support) == 40 and np.count_nonzero(a.aggregate) <= 40
    off = np.setdiff1d(np.arange(d), support)
    np.testing.assert_array_equal(a.aggregate[off], 0.0)
    step = 1 / Quantize(clip=0.5, bits=32).scale(n)
    np.testing.assert_allclose(a.aggregate[support], u[:, support].mean(0), atol=2 * step)
    # the supports change with the round and are the same for every site
    assert not np.array_equal(rk.support(2), rk.support(3))
    assert np.array_equal(rk.support(2), RandK(0.1, d, seed=9).support(2))


def test_topk_refused_under_secagg_naming_both_stages_and_the_fix() -> None:
    with pytest.raises(ConfigError, match="'secagg' cannot follow stage 'topk'.*'randk'"):
        Pipeline([UniformMean(), TopK(0.1)], SecAggSum(bits=32))
    with pytest.raises(ConfigError, match="'quantize' cannot follow stage 'topk'.*'randk'"):
        Pipeline([TopK(0.1), Quantize(clip=1.0, bits=32)], SecAggSum(bits=32))
    # error feedback escapes a DP clip: refused in a chain with a DP mechanism
    with pytest.raises(ConfigError, match="'topk' is not for differentially private"):
        Chain([DPFedAvg(1.0, 1.0, 5.0), TopK(0.1)])
    with pytest.raises(ConfigError, match="'qsgd' is not for differentially private"):
        Chain([DPFedAvg(1.0, 1.0, 5.0), QSGD(4)])
    Chain([DPFedAvg(1.0, 1.0, 5.0), RandK(0.1, 10, error_feedback=False)])  # composes
    Pipeline([UniformMean(), TopK(0.1)], PayloadSum(TopK(0.1)))  # a plain sum takes it


def test_bytes_are_the_payload_length() -> None:
    n, d = 4, 1000
    u = np.random.default_rng(4).normal(0, 1, (n, d))
    w = [3, 1, 2, 5]
    top = TopK(0.02, passthrough=1)
    pt = Pipeline([WeightedMean(), top], PayloadSum(top))
    _, res = pt.run_round(pt.init(), u, _ctx(n, weights=w))
    # 20 indices (u16) + 20 float32 values + the float32 weight + the header
    assert set(res.bytes_sent.values()) == {20 * (2 + 4) + 4 + HEADER_BYTES}
    assert np.count_nonzero(res.aggregate) <= n * 20
    q = QSGD(3, passthrough=1)
    pq = Pipeline([WeightedMean(), q], PayloadSum(q))
    _, rq = pq.run_round(pq.init(), u, _ctx(n, weights=w))
    assert set(rq.bytes_sent.values()) == {4 + math.ceil(d * 3 / 8) + 4 + HEADER_BYTES}
    # the float32 baseline and random-k in a plain sum: the row's float32 width
    pf = Pipeline([WeightedMean()], PlainSum())
    _, rf = pf.run_round(pf.init(), u, _ctx(n, weights=w))
    assert set(rf.bytes_sent.values()) == {(d + 1) * 4 + HEADER_BYTES}
    pr = Pipeline([RandK(0.1, d), WeightedMean()], PlainSum())
    _, rr = pr.run_round(pr.init(), u, _ctx(n, weights=w))
    assert set(rr.bytes_sent.values()) == {(100 + 1) * 4 + HEADER_BYTES}
    assert rq.measurements["payload_sum/float32_ratio"] == pytest.approx(
        ((d + 1) * 4 + HEADER_BYTES) / (4 + 375 + 4 + HEADER_BYTES))


def test_payloads_round_trip_and_the_sum_is_what_was_sent() -> None:
    n, d = 3, 70_000  # above 2^16 coordinates: u32 indices
    u = np.random.default_rng(5).normal(0, 1, (n, d))
    top = TopK(0.001)
    out, _, _ = top.encode(None, [None] * n, u, _ctx(n))
    payload = top.pack(out[0])
    assert len(payload) == top.k(d) * (4 + 4)
    np.testing.assert_array_equal(top.unpack(payload, d), out[0])
    q = QSGD(5, passthrough=2)
    rows = np.concatenate([u[:, :500], np.full((n, 2), 7.5)], axis=1)
    enc, _, _ = q.encode(None, [None] * n, rows, _ctx(n))
    for row in enc:
        np.testing.assert_array_equal(q.unpack(q.pack(row), 502), row)
    pq = Pipeline([q], PayloadSum(q))
    _, res = pq.run_round(pq.init(), rows, _ctx(n))
    np.testing.assert_allclose(res.aggregate, enc.sum(axis=0), rtol=0, atol=1e-9)
    codes = np.random.default_rng(6).integers(0, 8, 33)
    np.testing.assert_array_equal(unpack_codes(pack_codes(codes, 3), 33, 3), codes)
    with pytest.raises(LocalError, match="malformed"):
        q.unpack(b"\x00" * 7, 502)
