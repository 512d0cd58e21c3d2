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


def _logreg_config(tmp_path, name: str):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'name = "{name}"\nrounds = 2\noutput_dir = "{tmp_path}"\n[data]\nsites = 3\n'
        '[model]\nname = "logreg"\n'
    )
    return cfg


def test_train_and_resume_cli(tmp_path, capsys) -> None:
    cfg = _logreg_config(tmp_path, "cli")
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


def test_restart_after_corrupt_checkpoint(tmp_path, capsys) -> None:
    cfg = _logreg_config(tmp_path, "rs")
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "rs"
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")  # corrupt
    assert main(["train", str(cfg), "--quiet", "--resume"]) == 2
    assert main(["train", str(cfg), "--quiet"]) == 2
    assert "--restart" in capsys.readouterr().err
    assert main(["train", str(cfg), "--quiet", "--restart", "--resume"]) == 2
    assert main(["train", str(cfg), "--quiet", "--restart"]) == 0
    rec = json.loads((run / "record.json").read_text())
    assert len(rec["rounds"]) == 2 and (run / "model.pt").is_file()
    # the earlier run's files are kept, not deleted
    assert (run / "previous-1" / "checkpoint.pt").read_bytes() == b"not a checkpoint"
    assert (run / "previous-1" / "record.json").is_file()
    assert main(["train", str(cfg), "--quiet", "--restart"]) == 0
    assert (run / "previous-2" / "record.json").is_file()
