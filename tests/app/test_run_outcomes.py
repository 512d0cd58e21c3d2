"""A run that aggregated nothing fails loudly; a site rejected every round is named."""

from __future__ import annotations

import json

import numpy as np
import torch

from veil.aggregation import Pipeline, PlainSum
from veil.app import train
from veil.app.train import round_outcomes
from veil.cli.main import main
from veil.data import load_digits, partition
from veil.federation import Simulation, make_server_optimizer
from veil.models import build_model
from veil.training import LocalConfig, Trainer


def _nan_model() -> torch.nn.Module:
    d = load_digits()
    m = build_model("logreg", d.input_shape, d.n_classes, seed=0)
    with torch.no_grad():
        next(m.parameters()).fill_(float("nan"))  # every site's update is NaN
    return m


def test_every_round_aborted_exits_nonzero_with_record(tmp_path, capsys) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'name = "nan"\nrounds = 2\noutput_dir = "{tmp_path}"\n[data]\nsites = 3\n'
        '[model]\nname = "logreg"\n'
    )
    from veil.app import load_config

    out = train(load_config(cfg), model=_nan_model())
    rec = json.loads((tmp_path / "nan" / "record.json").read_text())  # strict JSON parses
    assert rec["final"]["rounds_aggregated"] == 0
    assert "every one of the 2 rounds aborted" in rec["final"]["failed"]
    assert rec["model_path"] is None and not (tmp_path / "nan" / "model.pt").exists()
    assert out.failed == rec["final"]["failed"]
    assert ": NaN" not in (tmp_path / "nan" / "record.json").read_text()  # no NaN literal


def test_cli_exits_1_when_every_round_aborted(tmp_path, capsys, monkeypatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'name = "cli"\nrounds = 2\noutput_dir = "{tmp_path}"\n[data]\nsites = 3\n'
        '[model]\nname = "logreg"\n'
    )
    import veil.federation.simulation as sim_mod

    # every site's update is found invalid (as a NaN/inf update is): every round is lost
    monkeypatch.setattr(sim_mod, "check_updates", lambda rows: np.zeros(len(rows), bool))
    code = main(["train", str(cfg), "--quiet"])
    err = capsys.readouterr().err
    rec = json.loads((tmp_path / "cli" / "record.json").read_text())
    assert rec["final"]["rounds_aggregated"] == 0, rec["rounds"]
    assert code == 1 and "run failed" in err and "every one of the 2 rounds aborted" in err


def test_healthy_run_has_no_failure() -> None:
    rounds = [{"survivors": [0, 1], "rejected": [2]}, {"survivors": [0, 2]}]
    out = round_outcomes(rounds)
    assert out == {"rounds_aggregated": 2, "sites_rejected_every_round": []}


def test_site_rejected_every_round_is_named() -> None:
    d = load_digits()
    parts = partition(d.y_train, 3, "iid", seed=0)
    x = d.x_train.copy()
    x[parts[1]] = np.nan  # site 1's data is broken: its update is NaN every round
    from veil.data import Dataset

    ds = Dataset(d.name, x, d.y_train, d.x_test, d.y_test, d.task, d.n_classes)
    model = build_model("logreg", d.input_shape, d.n_classes, seed=0)
    sim = Simulation(
        model, ds, parts, Pipeline([], PlainSum()), Trainer(model, d.task, LocalConfig(1, 32, 0.1)),
        make_server_optimizer("fedavg", 1.0), rounds=3, seed=3, cohort=3, secure_rng=False,
    )
    res = sim.run()
    assert all(r["rejected"] == [1] for r in res.rounds)
    out = round_outcomes(res.rounds)
    assert out["rounds_aggregated"] == 3 and out["sites_rejected_every_round"] == [1]
    assert "failed" not in out


def test_cli_warns_about_a_site_rejected_every_round(tmp_path, capsys, monkeypatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'name = "warn"\nrounds = 2\noutput_dir = "{tmp_path}"\n[data]\nsites = 3\n'
        '[model]\nname = "logreg"\n'
    )
    import veil.federation.simulation as sim_mod

    # site 0 (the first row of every round: all sites train, in order) sends NaN each round
    monkeypatch.setattr(sim_mod, "check_updates", lambda rows: np.arange(len(rows)) != 0)
    assert main(["train", str(cfg), "--quiet"]) == 0  # the other sites' rounds succeed
    out = capsys.readouterr().out
    assert "warning" in out and "[0]" in out and "every round" in out
    rec = json.loads((tmp_path / "warn" / "record.json").read_text())
    assert rec["final"]["sites_rejected_every_round"] == [0]
