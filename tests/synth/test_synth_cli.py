"""`veil synth CONFIG`: CSV + TOML in, synthetic CSV, release.json and report out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("mbi", reason="the `synth` extra (mbi) is not installed")

from synth_tables import make_table  # noqa: E402

from veil.cli.main import main  # noqa: E402

SCHEMA = """
[schema]
label = "y"
[[schema.columns]]
name = "x"
type = "numeric"
low = 0
high = 10
bins = 4
[[schema.columns]]
name = "c"
type = "categorical"
categories = ["a", "b", "c"]
[[schema.columns]]
name = "y"
type = "categorical"
categories = [0, 1]
"""


def _csv(path: Path, n: int, seed: int) -> None:
    t = make_table(n, seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "x", "c", "y"])  # "id" is not in the schema: never read
        for i, row in enumerate(zip(t["x"], t["c"], t["y"])):
            w.writerow([f"p{i}", f"{row[0]:.4f}", row[1], row[2]])


def _config(tmp: Path, policy: str, data: str) -> Path:
    cfg = tmp / "synth.toml"
    cfg.write_text(f'name = "t"\noutput_dir = "out"\n[synth]\nepsilon = 2.0\n'
                   f'mechanism = "fixed"\ncliques = "label_pairs"\niters = 100\n'
                   f"[data]\n{data}\n{SCHEMA}\n{policy}")
    return cfg


def test_synth_command_writes_release_and_report(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _csv(tmp_path / "a.csv", 800, 0)
    _csv(tmp_path / "b.csv", 800, 1)
    cfg = _config(tmp_path, "[policy]\nmax_epsilon = 2.0\nmin_accuracy = 0.6\n",
                  'sites = { a = "a.csv", b = "b.csv" }')
    assert main(["synth", str(cfg)]) == 0
    out = tmp_path / "out" / "t"
    doc = json.loads((out / "release.json").read_text())
    assert set(doc["releases"]) == {"a", "b"}
    for site, item in doc["releases"].items():
        assert item["release"]["entity"] == f"site:{site}"
        assert item["release"]["epsilon"] <= 2.0
        assert item["train_rows"] == 640 and item["holdout_rows"] == 160
        assert item["policy"]["passed"]
        rows = list(csv.reader(open(out / item["file"])))
        assert rows[0] == ["x", "c", "y"]  # schema columns only: "id" is not released
        assert all(r[1] in ("a", "b", "c") and r[2] in ("0", "1") for r in rows[1:])
    html = (out / "report.html").read_text()
    assert "ε spent (ledger)" in html and "Release: b" in html and "data:image/png" in html
    assert "eps=" in capsys.readouterr().out


def test_synth_command_exits_3_when_a_policy_target_is_missed(tmp_path: Path) -> None:
    _csv(tmp_path / "t.csv", 800, 0)
    cfg = _config(tmp_path, "[policy]\nmax_epsilon = 1.0\n", 'path = "t.csv"')
    assert main(["synth", str(cfg)]) == 3  # ε = 2 > 1
    doc = json.loads((tmp_path / "out" / "t" / "release.json").read_text())
    assert doc["releases"]["dataset"]["policy"]["passed"] is False
    assert "not releasable" in (tmp_path / "out" / "t" / "report.html").read_text()


def test_synth_command_bad_config_exits_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[synth]\nepsilon = 1.0\nmechansim = "mst"\n[data]\npath = "x.csv"\n'
                   + SCHEMA)
    assert main(["synth", str(cfg)]) == 2
    assert "mechansim" in capsys.readouterr().err


def test_description_tiers_reach_the_synthesis(tmp_path: Path) -> None:
    """[description]: c sensitive (stricter per-column ε), x generalised, an identifier refused."""
    _csv(tmp_path / "t.csv", 800, 0)
    desc = ('[description]\nidentifiers = ["id"]\nsensitive = ["c"]\n'
            '[description.quasi_identifiers]\nx = { width = 5 }\n')
    cfg = _config(tmp_path, desc, 'path = "t.csv"')
    text = cfg.read_text().replace("iters = 100\n", "iters = 100\nsensitive_noise_factor = 3.0\n")
    cfg.write_text(text)
    assert main(["synth", str(cfg)]) == 0
    rel = json.loads((tmp_path / "out" / "t" / "release.json").read_text())["releases"]["dataset"]
    assert rel["release"]["sensitive"] == ["c"]
    att = rel["release"]["attribute_epsilon"]
    assert att["c"] < 0.5 * att["x"]
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace('identifiers = ["id"]', 'identifiers = ["x"]')
                   .replace("x = { width = 5 }\n", ""))
    assert main(["synth", str(bad)]) == 2
