"""A run over each site's own file: per-site reading, metrics, model.pt, one log entry."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import torch

import veil
from veil.app import parse_config, train
from veil.audit.log import AuditLog

ROOT = Path(__file__).resolve().parents[2]


def test_three_hospital_files_train_end_to_end(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the example's paths are relative to the repository
    raw = tomllib.loads((ROOT / "examples" / "own_sites" / "hospitals.toml").read_text())
    raw.update({"rounds": 2, "output_dir": str(tmp_path)})
    cfg = parse_config(raw)
    assert cfg.data.sites == 3
    out = train(cfg)
    rec = json.loads((out.run_dir / "record.json").read_text(),
                     parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    sites = rec["data"]["sites"]
    assert [s["name"] for s in sites] == ["hospital_a", "hospital_b", "hospital_c"]
    assert sites[2]["test"].startswith("file ") and "holdout 25%" in sites[1]["test"]
    assert rec["plan"]["site_sizes"] == [s["n_train"] for s in sites]
    final = rec["final"]
    assert set(final["site_metrics"]) == {"hospital_a", "hospital_b", "hospital_c"}
    assert final["site_metrics"]["hospital_c"]["n"] == 40
    for k in ("accuracy", "balanced_accuracy", "f1", "auc"):
        assert 0.0 <= final["metrics"][k] <= 1.0
    state = torch.load(out.run_dir / "model.pt", weights_only=True)
    assert set(state) == {"net.1.weight", "net.1.bias", "net.3.weight", "net.3.bias"}
    model = veil.load_model(out.run_dir)
    assert rec["model"]["n_parameters"] == sum(p.numel() for p in model.parameters())
    train(cfg, resume=True)  # resuming the finished run adds no second log entry
    log = AuditLog(tmp_path / "audit.log")
    assert log.verify().ok and log.verify().n_entries == 1


def test_cli_shows_each_sites_metrics(tmp_path: Path, monkeypatch, capsys) -> None:
    from veil.cli.main import main

    monkeypatch.chdir(ROOT)
    toml = str(ROOT / "examples" / "own_sites" / "hospitals.toml")
    assert main(["train", toml, "--quiet", "--rounds", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "hospitals: own files, 3 sites" in out and "each site's own test data" in out
    assert "hospital_b" in out and "ROC AUC" in out
