"""End to end through the runtime: ε reported per round, refusal, clean stop with a saved model."""

from __future__ import annotations

import json

import pytest

from veil.errors import BudgetExceededError
from veil.app import parse_config, train

pytestmark = pytest.mark.filterwarnings("ignore")


def _cfg(tmp_path, privacy: dict, rounds: int = 3, **fed):
    return parse_config({
        "name": "dp", "output_dir": str(tmp_path), "seed": 1, "rounds": rounds,
        "data": {"dataset": "digits", "sites": 4, "partition": "dirichlet", "alpha": 0.5},
        "model": {"name": "mlp", "hidden": [16]},
        "local": {"lr": 0.5},
        "federation": {"cohort_size": 2, "sampling": "poisson", **fed},
        "privacy": {"enabled": True, "secure_rng": False, **privacy},
    })


def test_run_reports_epsilon_every_round(tmp_path) -> None:
    cfg = _cfg(tmp_path, {
        "target_epsilon": 10.0, "delta": 1e-3,
        "sample_level": {"enabled": True, "noise_multiplier": 1.0, "expected_batch_size": 64},
        "client_level": {"enabled": True, "noise_multiplier": 1.5, "clip_norm": 1.0,
                         "adaptive": {"count_stddev": 2.0}},
    })
    out = train(cfg)
    rec = json.loads((tmp_path / "dp" / "record.json").read_text())
    rounds = rec["rounds"] if "rounds" in rec else rec.get("records", [])
    eps = [r["epsilon_client"] for r in rounds]
    assert len(eps) == 3 and eps == sorted(eps) and 0 < eps[0]
    assert (
        all(r["epsilon_sample_max"] > 0 for r in rounds[1:]) or rounds[0]["epsilon_sample_max"] > 0
    )
    assert out is not None


def test_over_budget_run_refused(tmp_path) -> None:
    cfg = _cfg(tmp_path, {
        "target_epsilon": 0.5, "delta": 1e-3,
        "client_level": {"enabled": True, "noise_multiplier": 0.5},
    }, rounds=20)
    with pytest.raises(BudgetExceededError, match="noise_multiplier"):
        train(cfg)


def test_run_stops_at_budget_and_saves(tmp_path) -> None:
    cfg = _cfg(tmp_path, {
        "target_epsilon": 2.0, "delta": 1e-3, "over_budget": "stop",
        "client_level": {"enabled": True, "noise_multiplier": 1.0},
    }, rounds=200)
    train(cfg)
    run = tmp_path / "dp"
    rec = json.loads((run / "record.json").read_text())
    text = json.dumps(rec)
    assert "budget reached" in text
    assert any(p.suffix == ".pt" for p in run.iterdir())
