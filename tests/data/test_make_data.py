"""`make data` finds Fashion-MNIST where Debian installs it and runs apt only when it is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make_data(tmp_path: Path, dirs: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "apt-called"
    fake = bin_dir / "apt-get"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    res = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "data", f"FMNIST_DIRS={dirs}"],
        capture_output=True, text=True, env=env,
    )
    return res, marker


def test_present_files_found_without_apt(tmp_path: Path) -> None:
    found = tmp_path / "datasets" / "fashion-mnist"
    found.mkdir(parents=True)
    (found / "train-images-idx3-ubyte.gz").write_bytes(b"")
    res, marker = _make_data(tmp_path, f"{tmp_path}/nowhere {found}")
    assert res.returncode == 0, res.stderr
    assert str(found) in res.stdout
    assert not marker.exists(), "apt-get ran although the files were present"


def test_missing_files_call_apt(tmp_path: Path) -> None:
    res, marker = _make_data(tmp_path, f"{tmp_path}/nowhere")
    assert marker.exists() and "update" in marker.read_text()
    assert res.returncode != 0  # the fake apt-get fails, and make reports it
