"""The app bundle and the ``flwr`` CLI: write the bundle, submit a run, wait for it.

* :func:`write_app` — a Flower app bundle with an empty dependency list (``flwr run``
  installs nothing; the components live in the installed veil);
* :func:`write_connection` — ``$FLWR_HOME/config.toml`` with the SuperLink connection;
* :func:`flwr_run` — ``flwr run``, then wait until the run has *finished* (``flwr run``
  itself returns at submission and exits 0 even when the ServerApp later fails) and return
  Flower's final status; :func:`run_status` and :func:`run_log` read it and the ServerApp's
  log. Every ``flwr`` process gets the environment of
  :func:`veil.deploy.processes.flower_env` (FLWR_HOME, no telemetry, no update check).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from veil.deploy.processes import flower_bin, flower_env, node_config_arg
from veil.errors import LocalError

__all__ = ["APP_NAME", "VEIL_RUN_CONFIG", "write_app", "write_connection", "flwr_run",
           "run_status", "run_log"]

APP_NAME = "veil-deploy"

VEIL_RUN_CONFIG = {
    "veil-config": "", "out-dir": "", "stage-timeout": 30.0, "train-timeout": 0.0,
    "nodes-timeout": 120.0, "min-nodes": 0, "roster": "",
    "stage-listen": "", "stage-address": "", "stage-cert": "", "stage-key": "", "stage-ca": "",
}


def write_app(
    app_dir: str | os.PathLike[str],
    name: str = APP_NAME,
    modules: Mapping[str, str] | None = None,
    components: tuple[str, str] = ("veil_app:server", "veil_app:client"),
    run_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write a Flower app bundle source: ``pyproject.toml`` with no dependencies (nothing
    gets installed) and the given modules.

    The default is veil's app: one module re-exporting :mod:`veil.deploy.apps` and the
    run-config keys :func:`veil.deploy.server.serve` reads. ``veil bench deploy`` also
    writes Flower's own SecAgg+ app this way.

    Args:
        app_dir: where the files go.
        name: the app's project name.
        modules: file name → source of the Python files in the bundle.
        components: ``(serverapp, clientapp)`` object references.
        run_config: run-config keys and their defaults.
    """
    d = Path(app_dir)
    d.mkdir(parents=True, exist_ok=True)
    rc = VEIL_RUN_CONFIG if run_config is None else run_config
    keys = "".join(f"{k} = {json.dumps(v)}\n" for k, v in rc.items())
    (d / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "1.0.0"
description = "veil deployment bundle (components live in installed packages)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "veil"

[tool.flwr.app.components]
serverapp = "{components[0]}"
clientapp = "{components[1]}"

[tool.flwr.app.config]
{keys}"""
    )
    if modules is None:
        modules = {
            "veil_app.py": '"""Entry points of the veil deployment (see veil.deploy.apps)."""\n\n'
            "from veil.deploy.apps import client, server\n\n"
            '__all__ = ["server", "client"]\n'
        }
    for fname, src in modules.items():
        (d / fname).write_text(src)
    return d


def write_connection(
    flwr_home: str | os.PathLike[str], address: str, root_cert: str | None = None,
    name: str = "veil",
) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one SuperLink connection (the default)."""
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    tls = "insecure = true" if root_cert is None else f'root-certificates = "{root_cert}"'
    path = home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
        f'address = "{address}"\n{tls}\n'
    )
    return path


def _flwr(args: Sequence[str], env: Mapping[str, str], timeout_s: float, cwd: Path) -> str:
    p = subprocess.run(
        [flower_bin("flwr"), *args], capture_output=True, text=True, env=dict(env),
        timeout=timeout_s, cwd=cwd, check=False,
    )
    if p.returncode != 0:
        raise LocalError(f"flwr {' '.join(args)} failed ({p.returncode}): {p.stderr[-800:]}")
    return p.stdout


def flwr_run(
    flwr_home: str | os.PathLike[str],
    app_dir: str | os.PathLike[str],
    run_config: Mapping[str, Any],
    timeout_s: float = 600.0,
    connection: str = "veil",
    record: str | os.PathLike[str] | None = None,
) -> tuple[int, str]:
    """``flwr run`` the app and wait until the run has finished.

    Flower's status is read with ``flwr list`` (a CLI process each time): every 5 s, and
    as soon as ``record`` (the run's ``record.json``, if given) holds its final entry.

    Returns:
        ``(run_id, status)``; status is Flower's (``"finished:completed"`` on success,
        ``"finished:failed"`` when the ServerApp raised...).

    Raises:
        LocalError: ``flwr`` failed, or the run did not finish within ``timeout_s``.
    """
    env = flower_env(flwr_home)
    app = Path(app_dir)
    out = _flwr(
        ["run", str(app), connection, "--format", "json", "--run-config",
         node_config_arg(run_config)],
        env, 120.0, app,
    )
    try:
        run_id = int(json.loads(out[out.index("{"):])["run-id"])
    except (ValueError, KeyError) as exc:
        raise LocalError(f"flwr run did not report a run id: {exc}: {out[-500:]}") from None
    t0 = time.monotonic()
    status, asked = "", 0.0
    while time.monotonic() - t0 < timeout_s:
        now = time.monotonic()
        if now - asked >= 5.0 or _has_final(record):
            asked = now
            status = run_status(flwr_home, run_id, connection)
            if status.startswith("finished"):
                return run_id, status
        time.sleep(0.25)
    raise LocalError(f"run {run_id} not finished after {timeout_s:.0f} s (status {status!r})")


def _has_final(record: str | os.PathLike[str] | None) -> bool:
    if record is None:
        return False
    try:
        return "final" in json.loads(Path(record).read_text())
    except (OSError, ValueError):
        return False


def run_log(flwr_home: str | os.PathLike[str], run_id: int, connection: str = "veil") -> str:
    """The ServerApp's log of ``run_id`` as Flower kept it (``flwr log --show``)."""
    try:
        return _flwr(["log", str(run_id), connection, "--show"], flower_env(flwr_home), 60.0,
                     Path(flwr_home))
    except (LocalError, subprocess.TimeoutExpired) as exc:
        return f"(no log: {exc})"


def run_status(flwr_home: str | os.PathLike[str], run_id: int, connection: str = "veil") -> str:
    """Flower's status of ``run_id`` (e.g. ``"running"``, ``"finished:completed"``)."""
    env = flower_env(flwr_home)
    out = _flwr(["list", connection, "--run-id", str(run_id), "--format", "json"], env, 60.0,
                Path(flwr_home))
    data = json.loads(out[out.index("{"):])
    runs = data.get("runs", [])
    if not runs:
        return ""
    return str(runs[0].get("status", ""))
