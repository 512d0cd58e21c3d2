"""veil audit / audit_run on a run of the user's own nn.Module (trained via the Python API)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from veil.app import train
from veil.audit import audit_run
from veil.cli.main import main
from veil.errors import ConfigError, DataError
from veil.federation.config import parse_config


class MyNet(nn.Module):
    """A user's model: not one veil builds from a config (and it uses Dropout)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Dropout(0.1))
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _cfg(tmp_path, name: str, **extra):
    return parse_config({"name": name, "rounds": 3, "output_dir": str(tmp_path),
                         "data": {"sites": 3, "limit": 500}, "audit": {"canaries": 24},
                         "local": {"lr": 0.2}, **extra})


def test_audit_of_own_module_uses_its_architecture(tmp_path) -> None:
    torch.manual_seed(0)
    out = train(_cfg(tmp_path, "mine"), model=MyNet())
    rec = out.record
    assert rec["model"]["class"].endswith("MyNet") and rec["model"]["builder"] is None
    assert rec["model"]["n_parameters"] == 64 * 24 + 24 + 24 * 10 + 10
    assert rec["seeds"]["dropout"]["layers"] == {"body.3": 0.1}
    # without the class veil cannot rebuild it: a typed error naming the Python call
    with pytest.raises(ConfigError, match=r"audit_run\(run_dir, model=YourModel"):
        audit_run(out.run_dir, lira_refs=0, inversion=False)
    res = audit_run(out.run_dir, lira_refs=4, inversion=False, model=MyNet())
    assert res["one_run"]["m"] == 24 and res["membership"]["loss"]["n_members"] > 0
    lira = res["membership"]["lira"]
    assert 0.0 <= lira["online"]["auc"] <= 1.0 and lira["n_refs"] == 4
    saved = json.loads((out.run_dir / "audit.json").read_text())
    assert saved["membership"]["loss"]["auc"] == res["membership"]["loss"]["auc"]


def test_cli_audit_prints_a_short_summary_table(tmp_path, capsys, monkeypatch) -> None:
    import functools

    import veil.audit

    out = train(_cfg(tmp_path, "cfgmodel", model={"name": "logreg"}))
    # the CLI's audit with fewer LiRA references and inversion steps (time)
    monkeypatch.setattr(veil.audit, "audit_run", functools.partial(
        audit_run, lira_refs=4, inversion_steps=20))
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["audit", str(out.run_dir)]) == 0
    text = capsys.readouterr().out
    assert "ε bound (claimed)" in text and "none: not a DP run" in text
    assert "24 canaries" in text and "not a DP run, ε̂ is a lower bound only" in text
    assert "MIA loss" in text and "non-members < 1000" in text  # digits: 360 non-members
    assert "full results:" in text and len(text.splitlines()) < 40  # not the JSON
    assert (out.run_dir / "audit.json").is_file()


def test_audit_of_failed_run_says_it_released_nothing(tmp_path) -> None:
    run = tmp_path / "failed"
    run.mkdir()
    (run / "record.json").write_text(json.dumps({
        "name": "failed", "config": {"data": {"sites": 3}}, "model_path": None,
        "final": {"failed": "every one of the 2 rounds aborted"}, "rounds": []}))
    with pytest.raises(DataError, match="released no model.*every one of the 2 rounds"):
        audit_run(run, lira_refs=0, inversion=False)


def test_canaries_with_site_files_refused_naming_fix(tmp_path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("x,y\n1,0\n2,1\n")
    with pytest.raises(ConfigError, match=r"audit.canaries does not work with data.files.*"
                                          r"audit.canaries = 0"):
        parse_config({"data": {"files": [{"path": str(f)}] * 3,
                               "schema": {"label": {"name": "y", "classes": [0, 1]},
                                          "numeric": [{"name": "x"}]}},
                      "audit": {"canaries": 10}})
