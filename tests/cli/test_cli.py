from __future__ import annotations

import json

import pytest

from veil.cli.main import main


def test_train_help_lists_every_key(capsys) -> None:
    from veil.federation import describe_keys

    with pytest.raises(SystemExit) as ei:
        main(["train", "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    for key, _default, _desc in describe_keys():
        assert key in out


def test_bad_config_exits_2_with_clear_message(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = 3\n[data]\nsites = 2\n[federation]\ncohort_size = 5\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "ConfigError" in err and "cohort_size" in err and "Traceback" not in err


def test_train_and_resume_cli(tmp_path, capsys) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'name = "cli"\nrounds = 2\noutput_dir = "{tmp_path}"\n[data]\nsites = 3\n'
        '[model]\nname = "logreg"\n'
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    rec = json.loads((tmp_path / "cli" / "record.json").read_text())
    assert len(rec["rounds"]) == 2
    assert main(["train", str(cfg), "--quiet"]) == 2  # refuses to clobber
    assert main(["train", str(cfg), "--quiet", "--resume", "--rounds", "3"]) == 0
    rec = json.loads((tmp_path / "cli" / "record.json").read_text())
    assert len(rec["rounds"]) == 3


def test_unknown_benchmark(capsys) -> None:
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
