"""Run a peer framework's benchmark script in its own environment (never veil's deps).

Peer scripts live in ``benchmarks/peers/``; each takes ``--out FILE`` and writes its
measurements there as JSON. Flower's venv is made by ``benchmarks/peers/setup_flower.sh``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["repo_root", "flower_python", "run_peer_script"]

NOT_INSTALLED = "not installed (run benchmarks/peers/setup_flower.sh)"


def repo_root() -> Path:
    """The checkout this module was imported from."""
    return Path(__file__).resolve().parents[3]


def flower_python() -> Path | None:
    """A python that has Flower: the peer venv (``.peers/flwr/bin/python``), else this
    interpreter when veil's optional ``flower`` extra is installed; ``None`` if neither."""
    for base in (Path.cwd(), repo_root()):
        p = base / ".peers" / "flwr" / "bin" / "python"
        if p.exists():
            return p
    if importlib.util.find_spec("flwr") is not None:
        return Path(sys.executable)
    return None


def run_peer_script(script: str, args: list[str], timeout_s: int) -> dict[str, Any]:
    """Run ``benchmarks/peers/<script>`` with Flower's python and return its JSON.

    Never raises for a missing, failing or hanging peer: the result's ``status`` says what
    happened (``"ok"``, not installed, not found, timed out, failed with the log tail).
    """
    py = flower_python()
    if py is None:
        return {"status": NOT_INSTALLED}
    path = repo_root() / "benchmarks" / "peers" / script
    if not path.exists():
        return {"status": f"{path} not found (run from a veil checkout)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        cmd = [str(py), str(path), *args, "--out", str(out)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["OMP_NUM_THREADS"] = "1"
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=tmp,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"status": f"timed out after {timeout_s} s"}
        if proc.returncode != 0 or not out.exists():
            return {
                "status": f"failed (exit {proc.returncode})",
                "log_tail": (proc.stderr or proc.stdout)[-800:],
            }
        res: dict[str, Any] = json.loads(out.read_text())
    res["status"] = "ok"
    res["command"] = " ".join([".peers/flwr/bin/python", f"benchmarks/peers/{script}", *args])
    return res
