from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from veil.errors import ConfigError
from veil.app import parse_config, train
from veil.federation import BaseHook
from veil.federation.build import build_federation


def _cfg(tmp_path, **kw):
    raw = {
        "name": "r",
        "seed": 7,
        "rounds": 6,
        "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "sites": 8, "partition": "dirichlet", "alpha": 0.5},
        "model": {"name": "mlp", "hidden": [32]},
        "local": {"epochs": 1, "batch_size": 16, "lr": 0.1, "momentum": 0.5},
        "federation": {
            "cohort_size": 5,
            "dropout_rate": 0.2,
            "server_optimizer": "fedadam",
            "server_lr": 0.01,
        },
    }
    for k, v in kw.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_config(raw)


def test_fedavg_learns_and_writes_record(tmp_path) -> None:
    cfg = _cfg(
        tmp_path,
        rounds=8,
        federation={
            "cohort_size": None,
            "dropout_rate": 0.0,
            "server_optimizer": "fedavg",
            "server_lr": 1.0,
        },
    )
    out = train(cfg)
    rec = json.loads((out.run_dir / "record.json").read_text())
    assert len(rec["rounds"]) == 8
    accs = [r["test_accuracy"] for r in rec["rounds"]]
    assert accs[-1] > 0.75 and accs[-1] > accs[0] + 0.3
    r0 = rec["rounds"][0]
    assert set(r0["bytes_sent"]) == {str(s) for s in r0["survivors"]}
    # float32 rows + weight column + 16-byte header
    n_params = rec["plan"]["n_parameters"]
    assert r0["bytes_per_site_mean"] == (n_params + 1) * 4 + 16
    assert rec["seeds"]["seed"] == 7 and rec["versions"]["torch"].startswith("2.13")
    assert (out.run_dir / "model.pt").exists()


class _Crash(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path) -> None:
    full = train(_cfg(tmp_path / "a"))

    cfg = _cfg(tmp_path / "b")

    def crash_after_3(rec):
        if rec["round"] == 2:
            raise _Crash

    with pytest.raises(_Crash):
        train(cfg, on_round=crash_after_3)
    rec = json.loads((cfg.run_dir() / "record.json").read_text())
    assert len(rec["rounds"]) == 3  # every completed round is on disk
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg)  # refusing to overwrite an interrupted run
    resumed = train(cfg, resume=True)
    assert resumed.result.rounds_completed == 6
    assert torch.equal(full.result.params, resumed.result.params)
    a = [r["test_accuracy"] for r in full.result.rounds]
    b = [r["test_accuracy"] for r in resumed.result.rounds]
    assert a == b


def test_resume_rejects_other_run(tmp_path) -> None:
    cfg = _cfg(tmp_path, rounds=2)
    train(cfg)
    other = _cfg(tmp_path, rounds=3, model={"hidden": [16]})
    with pytest.raises(ConfigError, match="different model"):
        train(other, resume=True)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(_cfg(tmp_path, name="fresh"), resume=True)


def test_dropouts_and_deadline(tmp_path) -> None:
    cfg = _cfg(
        tmp_path, rounds=4, federation={"dropout_rate": 0.5, "deadline_s": 1.0, "latency_s": 1.0}
    )
    out = train(cfg)
    for r in out.result.rounds:
        assert set(r["survivors"]) <= set(r["cohort"])
        assert len(r["survivors"]) < len(r["cohort"]) or r["late"] == 0
    assert sum(r["late"] for r in out.result.rounds) > 0


def test_poisson_cohorts(tmp_path) -> None:
    cfg = _cfg(
        tmp_path,
        rounds=30,
        data={"sites": 20, "partition": "iid"},
        federation={
            "cohort_size": None,
            "cohort_fraction": 0.25,
            "sampling": "poisson",
            "dropout_rate": 0.0,
        },
    )
    fed = build_federation(cfg)
    sizes = [len(fed.sample_cohort(r)) for r in range(400)]
    assert abs(np.mean(sizes) - 5.0) < 0.5  # binomial(20, .25): sd of mean ≈ 0.1
    assert len(set(sizes)) > 3


class _Poison(BaseHook):
    name = "poison"


def test_nan_update_is_rejected_round_continues(tmp_path) -> None:
    cfg = _cfg(tmp_path, rounds=2, federation={"dropout_rate": 0.0})
    fed = build_federation(cfg)
    real = fed.trainer.train

    def bad_train(*a, **k):
        u = real(*a, **k)
        u[0, 0] = float("nan")
        return u

    fed.trainer.train = bad_train  # type: ignore[method-assign]
    res = fed.run()
    for r in res.rounds:
        assert r["measurements"]["rejected_sites"] == 1.0
        assert len(r["survivors"]) == len(r["cohort"]) - 1
    assert torch.isfinite(res.params).all()


def test_all_bad_round_keeps_model(tmp_path) -> None:
    cfg = _cfg(tmp_path, rounds=1, federation={"dropout_rate": 0.0})
    fed = build_federation(cfg)
    before = fed.params.clone()
    fed.trainer.train = lambda *a, **k: torch.full((5, before.numel()), float("inf"))  # type: ignore[method-assign]
    res = fed.run()
    assert "aborted" in res.rounds[0]
    assert torch.equal(res.params, before)


class _StopAt(BaseHook):
    name = "stopper"

    def before_round(self, round: int) -> str | None:
        return "budget reached" if round == 2 else None


def test_hook_can_stop_run(tmp_path) -> None:
    out = train(_cfg(tmp_path), hooks=[_StopAt()])
    assert out.result.rounds_completed == 2
    assert out.record["final"]["stopped_reason"] == "budget reached"
    assert (out.run_dir / "model.pt").exists()


def test_resume_rejects_changed_config(tmp_path) -> None:
    train(_cfg(tmp_path, rounds=2))
    with pytest.raises(ConfigError, match="config changed"):
        train(_cfg(tmp_path, rounds=3, local={"lr": 0.2}), resume=True)
    out = train(_cfg(tmp_path, rounds=3), resume=True)  # more rounds is fine
    assert out.result.rounds_completed == 3


def test_run_appends_to_verified_log_and_stores_canaries(tmp_path) -> None:
    from veil.audit.log import AuditLog

    out = train(_cfg(tmp_path, rounds=2, audit={"canaries": 20}))
    assert (out.run_dir / "canaries.npz").exists()
    n = len(out.result.rounds and out.record["plan"]["site_sizes"])
    assert sum(out.record["plan"]["site_sizes"]) < 1437 and n == 8  # 20 held out, ~half back in
    train(_cfg(tmp_path, name="second", rounds=1))
    log = AuditLog(tmp_path / "audit.log")
    res = log.verify()
    assert res.ok and res.n_entries == 2


def test_secure_aggregation_run_matches_plain_quality(tmp_path) -> None:
    kw = dict(
        rounds=4,
        data={"sites": 6, "partition": "iid"},
        federation={
            "cohort_size": None,
            "dropout_rate": 0.25,
            "server_optimizer": "fedavg",
            "server_lr": 1.0,
        },
    )
    plain = train(_cfg(tmp_path, name="plain", aggregation={}, **kw))
    sec = train(
        _cfg(
            tmp_path,
            name="sec",
            aggregation={"summation": "secagg", "quantize_range": 0.5},
            **kw,
        )
    )
    assert sec.record["pipeline"] == ["uniform_mean", "quantize", "secagg"]
    dropped = 0
    for r in sec.result.rounds:
        assert not r.get("aborted")
        dropped += len(r["cohort"]) - len(r["survivors"])
        assert r["measurements"]["secagg/k"] >= 2
    assert dropped > 0  # the schedule really dropped sites mid-protocol and recovered
    # unweighted vs weighted mean over near-equal IID sites + quantisation noise: close
    assert abs(sec.final_accuracy - plain.final_accuracy) < 0.1


def test_distributed_dp_under_secagg_is_accounted(tmp_path) -> None:
    priv = {
        "enabled": True,
        "target_epsilon": 8.0,
        "client_level": {"enabled": True, "clip_norm": 0.5, "mechanism": "distributed"},
    }
    cfg = _cfg(
        tmp_path,
        rounds=3,
        data={"sites": 20, "partition": "iid"},
        model={"name": "logreg"},
        federation={
            "cohort_size": 10,
            "dropout_rate": 0.1,
            "server_optimizer": "fedavg",
            "server_lr": 1.0,
        },
        aggregation={"summation": "secagg", "quantize_range": 0.5, "expected_dropout": 0.2},
        privacy=priv,
    )
    out = train(cfg)
    assert out.record["pipeline"] == [
        "clip",
        "uniform_mean",
        "quantize",
        "distributed_dp",
        "secagg",
    ]
    eps = [r["epsilon_client"] for r in out.result.rounds]
    assert all(b > a for a, b in zip(eps, eps[1:])) and eps[-1] <= 8.0 + 1e-6
    # the planned schedule was calibrated to the target for the expected survivors
    assert abs(out.record["privacy"]["privacy_planned_epsilon"]["client"] - 8.0) < 0.05
    assert all(r["measurements"]["distributed_dp/rho"] > 0 for r in out.result.rounds)


def test_distributed_dp_needs_secagg(tmp_path) -> None:
    priv = {"enabled": True, "client_level": {"enabled": True, "mechanism": "distributed"}}
    with pytest.raises(ConfigError, match="summation"):
        train(_cfg(tmp_path, rounds=1, privacy=priv))


def test_user_model_and_own_dataset(tmp_path) -> None:
    from torch import nn

    from veil.data import load_breast_cancer

    class Mine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(30, 8)
            self.b = nn.Linear(8, 2)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)) * 2.0)

    torch.manual_seed(0)
    out = train(
        _cfg(
            tmp_path,
            rounds=5,
            data={"sites": 4, "partition": "iid"},
            federation={"cohort_size": None, "dropout_rate": 0.0},
        ),
        model=Mine(),
        dataset=load_breast_cancer(seed=7),
    )
    assert out.record["plan"]["dataset"] == "breast_cancer"
    assert out.final_accuracy > 0.85
