"""One writer per run directory; atomic, strict-JSON writes; typed errors for bad outputs."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from veil._fs import RunLock, atomic_write, ensure_writable_dir, json_safe, write_json_atomic
from veil.errors import OutputError, RunLockedError


def _contender(run_dir: str, start: object, tried: object, results: object) -> None:
    """Both processes wait at `start`, try the lock, wait until both tried, then let go."""
    lock = RunLock(run_dir)
    start.wait(timeout=30)  # type: ignore[attr-defined]
    try:
        lock.acquire()
        outcome = "acquired"
    except RunLockedError as e:
        outcome = "refused: " + str(e)
    tried.wait(timeout=30)  # type: ignore[attr-defined]
    lock.release()
    results.put((os.getpid(), outcome))  # type: ignore[attr-defined]


def test_two_processes_started_together_exactly_one_proceeds(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    start, tried, results = ctx.Barrier(2), ctx.Barrier(2), ctx.Queue()
    run_dir = str(tmp_path / "runs" / "same-name")
    procs = [ctx.Process(target=_contender, args=(run_dir, start, tried, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    kinds = sorted(o.split(":")[0] for _, o in outcomes)
    assert kinds == ["acquired", "refused"], outcomes
    winner = next(pid for pid, o in outcomes if o == "acquired")
    refusal = next(o for _, o in outcomes if o.startswith("refused"))
    assert "another veil process" in refusal
    # the holder's pid is named (informational; written just after the lock is taken)
    assert f"pid {winner}" in refusal or "(pid" not in refusal
    # both gone: the directory is free again
    with RunLock(run_dir) as lock:
        assert lock.held


def test_second_lock_in_same_process_is_refused_and_release_frees(tmp_path: Path) -> None:
    a, b = RunLock(tmp_path / "r"), RunLock(tmp_path / "r")
    a.acquire()
    with pytest.raises(RunLockedError):
        b.acquire()
    a.release()
    b.acquire()
    assert b.held and not a.held
    b.release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    code = ("import os, sys; from veil._fs import RunLock; RunLock(sys.argv[1]).acquire(); "
            "os._exit(9)")  # dies holding the lock, without releasing it
    res = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True)
    assert res.returncode == 9
    assert (run_dir / ".veil.lock").exists()
    with RunLock(run_dir) as lock:
        assert lock.held


def test_lock_on_a_file_path_is_a_typed_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        RunLock(f / "run").acquire()


def test_records_are_strict_json_without_nan(tmp_path: Path) -> None:
    rec = {"loss": float("nan"), "eps": float("inf"), "neg": -float("inf"),
           "arr": np.array([1.0, np.nan]), "n": np.int64(3), "f": np.float32(0.5),
           "ok": np.bool_(True), "t": (1, 2), "p": tmp_path, 4: "int key"}
    p = write_json_atomic(tmp_path / "record.json", rec)
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text

    def refuse(c: str) -> None:
        raise AssertionError(f"non-standard JSON constant {c}")

    back = json.loads(text, parse_constant=refuse)
    assert back["loss"] is None and back["eps"] is None and back["neg"] is None
    assert back["arr"] == [1.0, None] and back["n"] == 3 and back["f"] == 0.5
    assert back["ok"] is True and back["t"] == [1, 2] and back["4"] == "int key"
    with pytest.raises(TypeError, match=r"\$\.bad: object"):
        json_safe({"bad": object()})
    assert json_safe({"x": [object]}, default=lambda o: "obj") == {"x": ["obj"]}
    assert json_safe({"x": object()}, default=lambda o: float("nan")) == {"x": None}


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "record.json"
    write_json_atomic(target, {"round": 1})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="no space left"):
        write_json_atomic(target, {"round": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"round": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_read_only_location_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    def ro(*a: object, **k: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", ro)
    with pytest.raises(OutputError, match="read-only"):
        write_json_atomic(tmp_path / "x.json", {})
    with pytest.raises(OutputError, match="read-only"):
        ensure_writable_dir(tmp_path / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_really_read_only_directory(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            ensure_writable_dir(d)
    finally:
        d.chmod(0o700)


def test_atomic_write_for_binary_files_and_body_errors(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"v1")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
