"""The package layers of docs/architecture.md hold: imports point downward only.

The contract lives in pyproject.toml (``[tool.importlinter]``); these tests run
import-linter on the source tree, and on a copy of it with one upward import added, which
must break the contract and name the offending import.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(src: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_layer_contract_is_kept() -> None:
    res = _lint(ROOT / "src", ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 kept, 0 broken" in res.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "veil", src / "veil", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    # the training layer reaching up into the federation it serves
    (src / "veil" / "training" / "_upward.py").write_text("import veil.federation.runtime\n")
    res = _lint(src, tmp_path)
    assert res.returncode != 0
    assert "BROKEN" in res.stdout
    assert "veil.training._upward -> veil.federation.runtime" in res.stdout
