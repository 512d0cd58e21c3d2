"""Buffered asynchronous aggregation (docs/async.md): the schedule, staleness weights and
drops against a hand-computed schedule, the identities with synchronous FedAvg and with a
plain sum, client-level DP accounting without amplification, exact resume, refusals, and
``veil train`` on a buffered config."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from dp_accounting import dp_event as dpe
from dp_accounting.rdp import rdp_privacy_accountant

from veil.aggregation import Pipeline, PlainSum, UniformMean
from veil.app import parse_config, train
from veil.data import load_digits, partition
from veil.errors import ConfigError
from veil.federation.buffered import RELATION, BufferedSimulation, staleness_weight
from veil.federation.buffered_config import BufferedConfig
from veil.federation.build import build_federation
from veil.federation.latency import LatencyModel
from veil.federation.server_opt import make_server_optimizer
from veil.models import build_model
from veil.training import LocalConfig, Trainer


def test_staleness_weights_as_stated() -> None:
    for s in range(6):
        assert staleness_weight("constant", s) == 1.0
        assert staleness_weight("sqrt", s) == pytest.approx(1 / math.sqrt(1 + s), rel=1e-12)
        assert staleness_weight("polynomial", s, 2.0) == pytest.approx((1 + s) ** -2.0)
    with pytest.raises(ConfigError):
        staleness_weight("linear", 1)
    with pytest.raises(ConfigError):
        staleness_weight("sqrt", -1)


class _Table:
    """A hand-written schedule: site -> list of job durations (last one repeats)."""

    def __init__(self, table: dict[int, list[float]]) -> None:
        self.table = table

    def seconds(self, site: int, job: int) -> float:
        d = self.table[site]
        return d[min(job, len(d) - 1)]

    def describe(self) -> dict[str, str]:
        return {"distribution": "hand-written table"}


def _parts():
    d = load_digits()
    return d, partition(d.y_train, 4, "iid", seed=1)


def test_hand_computed_schedule() -> None:
    """4 sites, K = 2, max staleness 1, sqrt weights; durations chosen so that
    t=1.0 s0 | t=1.5 s1 -> apply v1 (s0,s1 restart) | t=2.2 s2 (st 1) | t=2.5 s0 -> apply
    v2 [s0 st0, s2 st1] | t=3.0 s1 (st 1) | t=3.2 s3 (v0 at v2: st 2 > 1, dropped) |
    t=3.5 s0 and s2 tie, s0 first -> apply v3 [s0 st0, s1 st1]; s2 (st 1) |
    t=4.5 s0 -> apply v4 [s0 st0, s2 st1]."""
    d, parts = _parts()
    model = build_model("logreg", d.input_shape, d.n_classes, seed=0)
    local = LocalConfig(epochs=1, batch_size=32, lr=0.1)
    trainer = Trainer(model, "classification", local)
    table = _Table({0: [1.0], 1: [1.5], 2: [2.2, 1.0], 3: [3.2, 10.0]})
    fed = BufferedSimulation(
        model, d, parts, Pipeline([UniformMean()], PlainSum()), trainer,
        make_server_optimizer("fedavg", 1.0, 0.9), rounds=4, seed=3,
        buffered=BufferedConfig(buffer_size=2, max_staleness=1, staleness="sqrt"),
        latency=table,
    )
    p0 = fed.params.clone()
    res = fed.run()
    recs = res.rounds
    assert [r["sim_time_s"] for r in recs] == [1.5, 2.5, 3.5, 4.5]
    assert [r["cohort"] for r in recs] == [[0, 1], [0, 2], [0, 1], [0, 2]]
    assert [r["staleness"] for r in recs] == [[0, 0], [0, 1], [0, 1], [0, 1]]
    w = 1 / math.sqrt(2)
    assert recs[1]["staleness_weights"] == pytest.approx([1.0, w])
    assert [r["stale_dropped"] for r in recs] == [0, 0, 1, 0]  # s3 at t = 3.2
    assert fed.schedule()["stale_dropped"] == 1

    # the model, recomputed by hand from the trainer: v+1 = v + (1/K) sum w_i delta_i
    data = fed.data

    def delta(site: int, params: torch.Tensor, version: int) -> np.ndarray:
        out = trainer.train(params, data, np.asarray([site]), 3, version)
        return out[0].double().numpy()

    def apply(v: torch.Tensor, terms: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(v.double().numpy() + sum(terms) / 2).float()

    v1 = apply(p0, [delta(0, p0, 0), delta(1, p0, 0)])
    v2 = apply(v1, [delta(0, v1, 1), w * delta(2, p0, 0)])
    v3 = apply(v2, [delta(0, v2, 2), w * delta(1, v1, 1)])
    v4 = apply(v3, [delta(0, v3, 3), w * delta(2, v2, 2)])
    assert torch.allclose(res.params, v4, atol=1e-6, rtol=0)
    # the weights matter: with constant weights the model differs
    v2c = apply(v1, [delta(0, v1, 1), delta(2, p0, 0)])
    assert not torch.allclose(v2c, v2, atol=1e-5)


def _raw(tmp_path, **kw):
    """A small buffered-run config (sections in ``kw`` are merged into the defaults)."""
    raw = {
        "name": "buf", "seed": 11, "rounds": 6, "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "sites": 8},
        "model": {"name": "logreg"},
        "local": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "federation": {
            "mode": "buffered", "cohort_size": 6, "dropout_rate": 0.1,
            "buffered": {"buffer_size": 3, "max_staleness": 2, "latency_tail": "slow_sites",
                         "slow_fraction": 0.25},
        },
        "audit": {"log": False},
    }
    for k, v in kw.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return raw


def _cfg(tmp_path, **fed):
    """Six sites, four updates, only ``fed`` in [federation]."""
    return {**_raw(tmp_path, seed=5, rounds=4, data={"sites": 6}), "federation": fed}


@pytest.mark.parametrize("spread,tail", [(0.0, "none"), (0.8, "slow_sites")])
def test_equals_synchronous_fedavg_when_k_is_every_site(tmp_path, spread, tail) -> None:
    """K = concurrency = every site: every contribution has staleness 0 and each applied
    buffer is one synchronous round over all sites — bit-equal to Simulation, with equal
    latencies and also with heavy-tailed ones (the buffer is summed in site order)."""
    sync = build_federation(parse_config(_cfg(tmp_path, latency_spread=spread)))
    buf = build_federation(parse_config(_cfg(
        tmp_path, mode="buffered", latency_spread=spread,
        buffered={"buffer_size": 6, "staleness": "sqrt", "latency_tail": tail},
    )))
    assert isinstance(buf, BufferedSimulation)
    a, b = sync.run(), buf.run()
    assert torch.equal(a.params, b.params)
    assert [r["test_accuracy"] for r in a.rounds] == [r["test_accuracy"] for r in b.rounds]
    assert all(r["staleness"] == [0] * 6 for r in b.rounds)
    # simulated time: each round waits for its slowest site
    lat = buf.latency
    want = sum(max(lat.seconds(s, r) for s in range(6)) for r in range(4))
    assert b.rounds[-1]["sim_time_s"] == pytest.approx(want, rel=1e-12)


def test_secagg_buffer_sum_equals_plain(tmp_path) -> None:
    """SecAgg+ over each buffer's 3 members gives the plain (unweighted) sum up to the
    quantiser's rounding (32-bit ring, range 1: steps of ~1e-9 per coordinate)."""
    fed = {"mode": "buffered", "buffered": {"buffer_size": 3, "max_staleness": 3,
                                            "latency_tail": "pareto"}}
    plain = build_federation(parse_config({
        **_cfg(tmp_path, **fed), "aggregation": {"summation": "plain", "weighted": False}}))
    sec = build_federation(parse_config({
        **_cfg(tmp_path, **fed), "aggregation": {"summation": "secagg"}}))
    assert sec.pipeline.summation.name != plain.pipeline.summation.name
    a, b = plain.run(), sec.run()
    assert [r["staleness"] for r in a.rounds] == [r["staleness"] for r in b.rounds]
    assert [r["sim_time_s"] for r in a.rounds] == [r["sim_time_s"] for r in b.rounds]
    assert any(max(r["staleness"]) > 0 for r in b.rounds)  # stale updates were summed
    assert all(r.get("n_summed", len(r.get("survivors", []))) == 3 for r in b.rounds)
    diff = float((a.params - b.params).abs().max())
    assert 0 < diff < 1e-5


def test_latency_model_seeded_and_heavy_tailed() -> None:
    m = LatencyModel(20, seed=4, latency_s=1.0, spread=0.3, tail="slow_sites",
                     slow_fraction=0.25, slow_factor=10.0)
    assert len(m.slow) == 5
    assert m.seconds(3, 7) == LatencyModel(20, 4, 1.0, 0.3, "slow_sites", 0.25).seconds(3, 7)
    slow = np.median([m.seconds(s, j) for s in m.slow for j in range(20)])
    fast = np.median([m.seconds(s, j) for s in set(range(20)) - m.slow for j in range(20)])
    assert 7 < slow / fast < 14  # factor 10 on the median, log-normal noise around it
    p = LatencyModel(20, seed=4, spread=0.0, tail="pareto", pareto_shape=1.5)
    x = np.asarray([p.seconds(s, j) for s in range(20) for j in range(50)])
    assert x.min() >= 1.0 and np.quantile(x, 0.99) > 10 * np.median(x) / 2
    with pytest.raises(ConfigError):
        LatencyModel(5, tail="weibull")


@pytest.mark.parametrize("fed,aggregation,match", [
    ({"buffered": {"buffer_size": 7}}, {}, "larger than data.sites"),
    ({"buffered": {"buffer_size": 2}}, {"summation": "secagg"}, "buffer_size >= 3"),
    ({}, {}, "needs federation.buffered.buffer_size"),
    ({"buffered": {"buffer_size": 3}, "deadline_s": 2.0}, {}, "deadline"),
    ({"buffered": {"buffer_size": 3}, "sampling": "poisson"}, {}, "sampling"),
])
def test_bad_buffered_config_is_a_config_error(tmp_path, fed, aggregation, match) -> None:
    raw = {**_cfg(tmp_path, mode="buffered", **fed), "aggregation": aggregation}
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


def _rdp_epsilon(event: dpe.DpEvent, delta: float) -> float:
    return rdp_privacy_accountant.RdpAccountant().compose(event).get_epsilon(delta)


@pytest.mark.parametrize("z", [1.2, None])  # fixed, and calibrated to the target
def test_client_dp_charged_per_buffer_without_amplification(tmp_path, z) -> None:
    T, delta, target = 6, 1e-5, 40.0
    priv = {"enabled": True, "target_epsilon": target, "delta": delta, "accountant": "rdp",
            "secure_rng": False,
            "client_level": {"enabled": True, "clip_norm": 0.5, "noise_multiplier": z}}
    out = train(parse_config(_raw(tmp_path, rounds=T, privacy=priv)))
    rec = out.record
    used = float(rec["privacy"]["noise"]["client_noise_multiplier"])
    if z is not None:
        assert used == z
    # independent computation: T releases, each Gaussian(z) with sensitivity C
    want = _rdp_epsilon(dpe.SelfComposedDpEvent(dpe.GaussianDpEvent(used), T), delta)
    got = rec["privacy"]["epsilon_client"]
    assert got == pytest.approx(want, rel=1e-9)
    assert got <= target + 1e-6
    # what Poisson amplification at the rate K/N would have claimed (not claimed here)
    amplified = _rdp_epsilon(dpe.SelfComposedDpEvent(
        dpe.PoissonSampledDpEvent(3 / 8, dpe.GaussianDpEvent(used)), T), delta)
    assert amplified < got
    basis = rec["privacy"]["privacy_accounting"]
    assert basis["neighbouring_relation"] == RELATION and basis["amplified"] is False
    # the mean divides each buffer's noised sum by K (not by the population)
    fed = build_federation(parse_config(_raw(tmp_path, name="p", rounds=T, privacy=priv)))
    assert fed.pipeline.transforms[0].expected_cohort == 3.0
    assert fed.pipeline.transforms[0].noise_multiplier == pytest.approx(used)
    # membership is not in the record (counts only), staleness is
    r0 = rec["rounds"][0]
    assert "cohort" not in r0 and r0["n_selected"] == 3 and len(r0["staleness"]) == 3


def test_resume_is_bit_equal_to_uninterrupted(tmp_path) -> None:
    full = train(parse_config(_raw(tmp_path / "a")))
    cfg = parse_config(_raw(tmp_path / "b"))

    class Crash(Exception):
        pass

    def crash(rec):
        if rec["round"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, on_round=crash)
    resumed = train(cfg, resume=True)
    assert torch.equal(full.result.params, resumed.result.params)
    keys = ("sim_time_s", "staleness", "staleness_weights", "stale_dropped", "lost",
            "cohort", "test_accuracy")
    assert [[r.get(k) for k in keys] for r in full.result.rounds] == \
        [[r.get(k) for k in keys] for r in resumed.result.rounds]
    sched = full.record["final"]["schedule"]
    assert sched == resumed.record["final"]["schedule"]
    # the schedule exercised what resume must carry: stale drops, lost jobs, idle picks
    assert sched["stale_dropped"] + sched["lost"] > 0 and sched["concurrency"] == 6


def test_veil_train_cli_on_a_buffered_config(tmp_path, capsys) -> None:
    from veil.cli.main import main

    toml = tmp_path / "buf.toml"
    toml.write_text(
        f'name = "cli"\nrounds = 3\noutput_dir = "{tmp_path}"\n'
        '[data]\nsites = 5\n[model]\nname = "logreg"\n[audit]\nlog = false\n'
        '[federation]\nmode = "buffered"\n'
        '[federation.buffered]\nbuffer_size = 3\nstaleness = "polynomial"\n'
        'staleness_exponent = 1.0\nlatency_tail = "pareto"\n'
    )
    assert main(["train", str(toml), "--quiet"]) == 0
    rec = json.loads((tmp_path / "cli" / "record.json").read_text())
    assert rec["plan"]["mode"] == "buffered"
    s = rec["final"]["schedule"]
    assert s["buffer_size"] == 3 and s["staleness"] == "polynomial" and s["sim_time_s"] > 0
    assert len(rec["rounds"]) == 3
    for r in rec["rounds"]:
        assert [round(w, 6) for w in r["staleness_weights"]] == \
            [round(1 / (1 + st), 6) for st in r["staleness"]]
