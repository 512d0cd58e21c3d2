"""``veil sweep`` never overwrites an earlier sweep: numbered folders, or a refused --out."""

from __future__ import annotations

import math

import pytest

from veil.app import load_config, privacy_sweep
from veil.cli.main import main
from veil.errors import ConfigError

CFG = ('name = "sw"\nrounds = 1\noutput_dir = "{out}"\n[data]\nsites = 3\n'
       '[model]\nname = "logreg"\n[privacy]\nenabled = true\n'
       '[privacy.sample_level]\nenabled = true\n')


def test_second_sweep_gets_new_folders(tmp_path) -> None:
    p = tmp_path / "s.toml"
    p.write_text(CFG.format(out=tmp_path))
    cfg = load_config(p)
    first = privacy_sweep(cfg, [math.inf])
    rec1 = (tmp_path / "sw-epsinf" / "record.json").read_bytes()
    table1 = (tmp_path / "sw-sweep" / "sweep.md").read_bytes()
    second = privacy_sweep(cfg, [math.inf])
    assert first[0]["run"] == str(tmp_path / "sw-epsinf")
    assert second[0]["run"] == str(tmp_path / "sw-2-epsinf")
    assert (tmp_path / "sw-2-sweep" / "sweep.md").is_file()
    # the first sweep is untouched
    assert (tmp_path / "sw-epsinf" / "record.json").read_bytes() == rec1
    assert (tmp_path / "sw-sweep" / "sweep.md").read_bytes() == table1


def test_explicit_out_holding_files_is_refused(tmp_path, capsys) -> None:
    p = tmp_path / "s.toml"
    p.write_text(CFG.format(out=tmp_path))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "sweep.md").write_text("an earlier sweep")
    with pytest.raises(ConfigError, match="--out"):
        privacy_sweep(load_config(p), [math.inf], out)
    assert main(["sweep", str(p), "--epsilons", "inf", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert (out / "sweep.md").read_text() == "an earlier sweep"
    assert not (tmp_path / "sw-epsinf").exists()  # refused before training
