"""Hash-chained audit log: intact logs verify; edits, removals, reorders, truncation fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from veil.audit.log import AuditLog, run_entry
from veil.errors import DataError


def _log(tmp_path: Path, n: int = 4) -> AuditLog:
    log = AuditLog(tmp_path / "audit.log")
    for i in range(n):
        log.append("run", {"i": i, "eps": [0.1 * i], "bytes": {"0": 100 + i}})
    return log


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines()


def _write(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("".join(line + "\n" for line in lines))


def test_intact_log_verifies(tmp_path: Path) -> None:
    log = _log(tmp_path)
    res = log.verify()
    assert res.ok and res.n_entries == 4 and res.bad_index is None
    assert res.head == json.loads(_lines(log)[-1])["hash"]


def test_missing_log_does_not_verify(tmp_path: Path) -> None:
    res = AuditLog(tmp_path / "none.log").verify()
    assert not res.ok and "no audit log" in res.reason
    assert AuditLog(tmp_path / "none.log").verify(missing_ok=True).ok  # what append uses


def test_deleted_log_with_its_head_left_fails_even_when_missing_is_ok(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.path.unlink()
    res = log.verify(missing_ok=True)
    assert not res.ok and "head file says 4 entries" in res.reason
    with pytest.raises(DataError):
        log.append("run", {"x": 1})


def test_cli_verify_on_a_missing_file_fails_clearly(tmp_path: Path, capsys) -> None:
    from veil.cli.main import main

    missing = tmp_path / "typo" / "audit.log"
    assert main(["log", "verify", str(missing)]) != 0
    out = capsys.readouterr()
    assert "no audit log" in out.out + out.err and str(missing) in (out.out + out.err)
    good = _log(tmp_path)
    assert main(["log", "verify", str(good.path)]) == 0
    assert "4 entries" in capsys.readouterr().out
    assert main(["log", "show", str(missing)]) != 0


def test_broken_log_is_caught_before_a_run_starts(tmp_path: Path) -> None:
    from veil.audit.log import verify_before_run

    assert verify_before_run(tmp_path / "new.log").n_entries == 0  # a first run starts it
    log = _log(tmp_path)
    assert verify_before_run(log.path).n_entries == 4
    lines = _lines(log)
    e = json.loads(lines[1])
    e["payload"]["i"] = 7
    lines[1] = json.dumps(e)
    _write(log, lines)
    with pytest.raises(DataError, match=r"fails verification at entry 1.*veil log verify"):
        verify_before_run(log.path)


def _record(rounds: int, wall_s: float) -> dict:
    return {"name": "r", "config": {"seed": 1, "rounds": rounds}, "seeds": {"seed": 1},
            "rounds": [{"round": i, "test_accuracy": 0.5 + 0.1 * i} for i in range(rounds)],
            "final": {"wall_s": wall_s, "test_loss": float("nan")}}


def test_resumed_finished_run_appends_no_duplicate(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    first, new = log.append_run(_record(3, wall_s=10.0))
    assert new and first["payload"]["final"]["test_loss"] is None  # NaN stored as null
    again, new2 = log.append_run(_record(3, wall_s=0.2))  # resume of the finished run
    assert not new2 and again["hash"] == first["hash"] and log.verify().n_entries == 1
    _, new3 = log.append_run(_record(5, wall_s=4.0))  # continued for more rounds: a new result
    assert new3 and log.verify().n_entries == 2 and log.verify().ok


def test_edited_payload_fails_at_that_entry(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    e = json.loads(lines[2])
    e["payload"]["eps"] = [0.0]
    lines[2] = json.dumps(e)
    _write(log, lines)
    res = log.verify()
    assert not res.ok and res.bad_index == 2 and "edited" in res.reason


def test_edit_with_recomputed_hash_breaks_the_chain(tmp_path: Path) -> None:
    from veil.audit.log import _entry_hash

    log = _log(tmp_path)
    lines = _lines(log)
    e = json.loads(lines[1])
    e["payload"]["i"] = 99
    e["hash"] = _entry_hash(e)
    lines[1] = json.dumps(e)
    _write(log, lines)
    res = log.verify()
    assert not res.ok and res.bad_index == 2


@pytest.mark.parametrize("drop", [0, 1, 3])
def test_removed_entry_fails(tmp_path: Path, drop: int) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    del lines[drop]
    _write(log, lines)
    res = log.verify()
    assert not res.ok
    assert res.bad_index == (drop if drop < 3 else 3)


def test_reordered_entries_fail(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    _write(log, lines)
    assert log.verify().bad_index == 1


def test_missing_head_file_fails(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.head_path.unlink()
    assert not log.verify().ok


def test_append_refuses_broken_log(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _write(log, _lines(log)[:-1])
    with pytest.raises(DataError):
        log.append("run", {"x": 1})


def test_payload_must_be_plain_json(tmp_path: Path) -> None:
    from veil.errors import LocalError

    log = AuditLog(tmp_path / "a.log")
    with pytest.raises(LocalError):
        log.append("run", {"eps": float("nan")})
    assert not log.path.exists() and log.verify(missing_ok=True).n_entries == 0


def test_run_entry_keeps_what_an_auditor_needs() -> None:
    rec = {"name": "r", "config": {"seed": 1}, "versions": {"torch": "x"},
           "rounds": [{"round": 0, "epsilon_client": 0.5, "bytes_sent": {"0": 10, "1": 12}}]}
    e = run_entry(rec)
    assert e["rounds"][0] == {"round": 0, "epsilon_client": 0.5, "bytes_total": 22}
    assert e["config"] == {"seed": 1} and e["versions"] == {"torch": "x"}
