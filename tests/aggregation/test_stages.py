"""Stages as values: chains are stages, domains are checked, per-site state and streams."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from veil.aggregation import (
    FLOAT,
    Chain,
    Clip,
    DistributedDP,
    DPFedAvg,
    EncodeContext,
    Pipeline,
    PlainSum,
    Quantize,
    SecAggSum,
    UniformMean,
    WeightedMean,
    make_stage,
    presets,
    ring,
)
from veil.aggregation.base import DecodeContext, SiteStateless, expect
from veil.crypto import SecureRng
from veil.errors import ConfigError


@dataclass(frozen=True)
class ErrorFeedback:
    """Toy stateful stage: send the update rounded to a grid, keep the residual at the site."""

    step: float = 1.0
    name: str = "error_feedback"

    def domain(self, upstream):
        expect(self.name, upstream, FLOAT)
        return FLOAT

    def init(self) -> None:
        return None

    def init_site(self) -> Any:
        return None  # no residual yet

    def encode(self, state, site_states, updates, ctx):
        res = np.stack([np.zeros(updates.shape[1]) if s is None else s for s in site_states])
        total = updates + res
        sent = np.round(total / self.step) * self.step
        return sent, list(total - sent), {}

    def decode(self, state, aggregate, ctx):
        return None, aggregate, {}, None


def _ctx(n: int, rngs=None) -> EncodeContext:
    return EncodeContext(0, np.arange(n), np.ones(n), None, n, rngs)


def test_chain_is_a_stage_and_presets_are_chains() -> None:
    inner = Chain([Clip(1.0), UniformMean()])
    outer = Chain([inner, Quantize(clip=1.0, bits=24)])
    assert [t.name for t in outer.stages] == ["clip", "uniform_mean", "quantize"]
    assert outer.domain(FLOAT) == ring(24) and outer.output == ring(24)
    ddp = presets.distributed_dp(0.5, 1.0, cohort=10, dim=50, bits=32, quantize_range=0.5)
    assert isinstance(ddp, Chain)
    assert [t.name for t in ddp.stages] == ["clip", "uniform_mean", "quantize", "distributed_dp"]
    q, noise = ddp.stages[2], ddp.stages[3]
    assert noise.scale == q.scale(10) and noise.bits == q.bits and noise.fits(10, 50)
    assert make_stage("clip", clip_norm=2.0) == Clip(2.0)
    with pytest.raises(ConfigError, match="unknown stage"):
        make_stage("median")


def test_misfits_are_refused_naming_both_stages() -> None:
    with pytest.raises(ConfigError, match="'secagg' cannot follow stage 'quantize'.*Z_2\\^32"):
        Pipeline([UniformMean(), Quantize(clip=1.0, bits=16)], SecAggSum(bits=32))
    with pytest.raises(ConfigError, match="'secagg' cannot follow stage 'uniform_mean'"):
        Pipeline([UniformMean()], SecAggSum(bits=32))  # floats into a ring summation
    q = Quantize(clip=1.0, bits=32)
    with pytest.raises(ConfigError, match="'distributed_dp' cannot follow stage 'clip'"):
        Chain([Clip(1.0), DistributedDP.after(q, 5, 1.0, 1.0)])
    with pytest.raises(ConfigError, match="'uniform_mean' cannot follow stage 'quantize'"):
        Chain([q, UniformMean()])
    with pytest.raises(ConfigError, match="'weighted_mean' is not for differentially private"):
        Chain([DPFedAvg(1.0, 1.0, 5.0), WeightedMean()])
    Pipeline([Clip(1.0), UniformMean(), q], SecAggSum(bits=32))  # fits


def test_site_state_survives_between_rounds() -> None:
    p = Pipeline([ErrorFeedback(step=1.0)], PlainSum(wire_float_dtype="float64"))
    u = np.full((2, 3), 0.4)
    states = [p.init_site(), p.init_site()]
    sent = []
    for _ in range(3):
        x, states, _ = p.encode_sites(p.init(), states, u, _ctx(2))
        sent.append(x[0, 0])
    # residuals accumulate at the site: 0.4 → 0, 0.8 → 1 (residual −0.2), 0.2 → 0
    assert sent == [0.0, 1.0, 0.0]
    np.testing.assert_allclose(states[0][0], np.full(3, 0.2))


def test_each_row_uses_its_own_stream() -> None:
    q = Quantize(clip=1.0, bits=24)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 400))
    x[1] = x[0]  # the same update at two sites
    rngs = [SecureRng.from_seed(1, f"site{i}") for i in range(3)]
    enc, _, _ = q.encode(None, [None] * 3, x, _ctx(3, rngs))
    assert not np.array_equal(enc[0], enc[1])  # different sites round differently
    # row 2 is exactly what site 2 encodes alone with its own stream
    alone, _, _ = q.encode(None, [None], x[2:], EncodeContext(
        0, np.asarray([2]), np.ones(1), SecureRng.from_seed(1, "site2"), 3))
    np.testing.assert_array_equal(enc[2], alone[0])
    # one batch stream is split per site: rows still differ for equal updates
    split, _, _ = q.encode(None, [None] * 3, x, EncodeContext(
        0, np.arange(3), np.ones(3), SecureRng.from_seed(2, "batch"), 3))
    assert not np.array_equal(split[0], split[1])


class _Stateless(SiteStateless):
    pass


def test_decode_is_inside_out() -> None:
    order: list[str] = []

    @dataclass(frozen=True)
    class Tag(SiteStateless):
        name: str

        def domain(self, upstream):
            return upstream

        def init(self):
            return None

        def encode(self, state, site_states, updates, ctx):
            order.append("enc:" + self.name)
            return updates, site_states, {}

        def decode(self, state, aggregate, ctx):
            order.append("dec:" + self.name)
            return None, aggregate, {}, None

    c = Chain([Tag("a"), Tag("b")])
    x, _, _ = c.encode(c.init(), [c.init_site()], np.ones((1, 2)), _ctx(1))
    c.decode(c.init(), x[0], DecodeContext(0, np.arange(1), 1))
    assert order == ["enc:a", "enc:b", "dec:b", "dec:a"]
    assert _Stateless().init_site() is None
