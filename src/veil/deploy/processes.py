"""Start and stop Flower's processes for a veil deployment; submit a run and wait for it.

Flower's sharp edges, handled here:

* **Environment**: every process gets ``FLWR_HOME`` (a directory of the caller's choice —
  Flower writes its config, installed apps and logs there), ``FLWR_TELEMETRY_ENABLED=0``
  and ``FLWR_DISABLE_UPDATE_CHECK=1``; the executables come from this interpreter's
  environment (``bin/`` beside ``sys.executable``).
* **No installs**: the SuperLink runs with ``--disable-runtime-dependency-installation``
  and the SuperNodes without ``--allow-runtime-dependency-installation``, so ``flwr run``
  never creates an environment or installs anything; the app bundle (:func:`write_app`)
  has an empty dependency list and its components live in the installed ``veil``.
* **Daemons**: SuperLink and SuperNode each start executor children (``flower-superexec``)
  and a veil site agent per SuperNode; :meth:`Proc.stop` ends the whole process group it
  started, by PID (SIGTERM, then SIGKILL), never by name.
* **Exit status**: ``flwr run`` returns once the run is *submitted* and exits 0 even when
  the ServerApp later fails; :func:`veil.deploy.runs.flwr_run` waits for the run to finish
  and returns its final status, and :func:`veil.deploy.read_result` also checks the record
  the ServerApp wrote.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.errors import ConfigError, LocalError

__all__ = [
    "Proc",
    "flower_bin",
    "exit_with_parent",
    "flower_env",
    "free_port",
    "start_superlink",
    "start_supernode",
    "supernode_command",
    "executor_command",
    "node_config_arg",
]

def flower_bin(name: str) -> str:
    """Path of Flower's console script ``name`` in this environment.

    Raises:
        ConfigError: Flower (the ``flower`` extra) is not installed here.
    """
    p = Path(sys.executable).parent / name
    if not p.exists():
        raise ConfigError(
            f"{name} not found beside {sys.executable}: install the Flower extra "
            "(pip install 'veil[flower]')",
            key="flower",
        )
    return str(p)


def flower_env(
    flwr_home: str | os.PathLike[str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of every Flower process: FLWR_HOME, no telemetry, no update check."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PYTHONUNBUFFERED="1",
        # executors look for new tasks every second by default; a stage exchange waits
        # for that on every message
        FLWR_SUPEREXEC_TASK_POLL_INTERVAL="0.1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    env.update(extra or {})
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A process this module started (in its own process group) and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    agent_dir: Path | None = None
    extra_pids: list[int] = field(default_factory=list)
    #: the site executor started beside a SuperNode (``isolation = "veil"``)
    executor: Proc | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        return int(self.popen.pid)

    def alive(self) -> bool:
        """Whether it still runs."""
        return self.popen.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        """The end of its log."""
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def terminate(self) -> None:
        """SIGTERM its process group (and note its descendants for :meth:`stop`)."""
        self.extra_pids.extend(descendants(self.pid))
        _signal_group(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL it and its descendants at once (a crash, as in the dropout tests)."""
        if self.executor is not None:
            self.executor.kill()
        for pid in [self.pid, *descendants(self.pid)]:
            _signal_group(pid, signal.SIGKILL)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after ``timeout_s``; also
        its descendants that left the group (Flower detaches its executors) and the site
        agent this SuperNode started (its PID file), all by PID."""
        if self.executor is not None:
            self.executor.stop(timeout_s)
        self.extra_pids.extend(descendants(self.pid))
        _signal_group(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(self.pid, signal.SIGKILL)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        pids = list(self.extra_pids)
        if self.agent_dir is not None and (self.agent_dir / "agent.pid").exists():
            try:
                pids.append(int((self.agent_dir / "agent.pid").read_text()))
            except ValueError:
                pass
        for pid in pids:
            _signal_group(pid, signal.SIGKILL)


def exit_with_parent(pid: int, on_exit: Callable[[], None] | None = None) -> None:
    """End this process (``os._exit(0)``, after ``on_exit``) once process ``pid`` is gone.

    Watches from a daemon thread (a signal check every 0.5 s), so a helper process that
    its parent left behind does not outlive it.
    """

    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                if on_exit is not None:
                    on_exit()
                os._exit(0)
            except PermissionError:
                pass
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def descendants(pid: int) -> list[int]:
    """PIDs of the live descendants of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _start(name: str, cmd: list[str], env: Mapping[str, str], log: Path) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        p = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=dict(env),
            start_new_session=True,
        )
    return Proc(name, p, log)


def _wait_port(proc: Proc, host: str, port: int, timeout_s: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if not proc.alive():
            raise LocalError(f"{proc.name} exited at start-up:\n{proc.log_tail()}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    proc.stop()
    raise LocalError(f"{proc.name} did not listen on {host}:{port} in {timeout_s:.0f} s")


def start_superlink(
    flwr_home: str | os.PathLike[str],
    port: int,
    host: str = "127.0.0.1",
    certs: tuple[str, str, str] | None = None,
    timeout_s: float = 60.0,
) -> Proc:
    """Start ``flower-superlink`` (Fleet, Control and Runtime APIs on ``host:port``).

    Args:
        flwr_home: FLWR_HOME of the process.
        port: the one HTTP(S) port of the SuperLink.
        host: address to listen on (``0.0.0.0`` for other machines).
        certs: ``(ca_cert, server_cert, server_key)`` PEM paths for TLS; ``None`` runs
            ``--insecure`` (loopback tests only).
        timeout_s: how long to wait for the port.

    Raises:
        LocalError: it exited or did not listen in time.
    """
    cmd = [flower_bin("flower-superlink"), "--host", host, "--port", str(port),
           "--disable-runtime-dependency-installation"]
    if certs is None:
        cmd.append("--insecure")
    else:
        ca, cert, key = certs
        cmd += ["--ssl-ca-certfile", ca, "--ssl-certfile", cert, "--ssl-keyfile", key]
    home = Path(flwr_home)
    proc = _start("superlink", cmd, flower_env(home), home / "superlink.log")
    _wait_port(proc, "127.0.0.1" if host in ("0.0.0.0", "") else host, port, timeout_s)
    return proc


def node_config_arg(node_config: Mapping[str, Any]) -> str:
    """The ``--node-config`` string: ``key="text" key=1 key=true`` (TOML values)."""
    parts = []
    for k, v in node_config.items():
        if isinstance(v, bool):
            parts.append(f"{k}={'true' if v else 'false'}")
        elif isinstance(v, int | float):
            parts.append(f"{k}={v}")
        else:
            parts.append(f"{k}={json.dumps(str(v))}")
    return " ".join(parts)


ISOLATIONS = ("veil", "subprocess")


def supernode_command(
    superlink: str,
    node_config: Mapping[str, Any],
    runtime_port: int,
    root_cert: str | None = None,
    isolation: str = "veil",
) -> list[str]:
    """The SuperNode's command line.

    Flower's SuperNode with its fixed waits capped (:func:`veil.deploy.executor.fast_supernode`);
    ``isolation = "veil"``: ``--isolation process``, for the site executor
    (:mod:`veil.deploy.executor`) to serve; ``"subprocess"``: Flower's own ClientApp
    process per message (veil's forwards to the site agent; other apps run as Flower runs
    them).

    Raises:
        ConfigError: unknown isolation, or Flower not installed.
    """
    if isolation not in ISOLATIONS:
        raise ConfigError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}",
                          key="--isolation")
    args = ["--superlink", superlink, "--port", str(runtime_port),
            "--node-config", node_config_arg(node_config)]
    args += ["--insecure"] if root_cert is None else ["--root-certificates", root_cert]
    flower_bin("flower-supernode")  # Flower is installed
    return [sys.executable, "-m", "veil.deploy.executor", "supernode", *args,
            "--isolation", "process" if isolation == "veil" else "subprocess"]


def executor_command(runtime_port: int, parent_pid: int, pid_file: Path | None) -> list[str]:
    """The site executor's command line (it serves the SuperNode's runtime API)."""
    cmd = [sys.executable, "-m", "veil.deploy.executor", "--runtime",
           f"127.0.0.1:{runtime_port}", "--parent-pid", str(parent_pid)]
    return cmd + (["--pid-file", str(pid_file)] if pid_file is not None else [])


def start_supernode(
    flwr_home: str | os.PathLike[str],
    superlink: str,
    node_config: Mapping[str, Any],
    runtime_port: int,
    root_cert: str | None = None,
    name: str = "supernode",
    isolation: str = "veil",
) -> Proc:
    """Start ``flower-supernode`` for one site (and its site executor).

    Args:
        flwr_home: FLWR_HOME of the process (one per SuperNode).
        superlink: the SuperLink's ``host:port``.
        node_config: the site's own run config (``config``), where its data is (``data``
            or ``dataset`` + ``partition-id``) and the agent directory (``agent-dir``).
        runtime_port: local port of the SuperNode's runtime API (its executor uses it).
        root_cert: CA certificate that signed the SuperLink's certificate (TLS); ``None``
            connects ``--insecure``.
        name: name for logs.
        isolation: ``"veil"`` (the long-lived site executor) or ``"subprocess"``
            (Flower's ClientApp process per message); see :func:`supernode_command`.
    """
    cmd = supernode_command(superlink, node_config, runtime_port, root_cert, isolation)
    home = Path(flwr_home)
    env = flower_env(home)
    proc = _start(name, cmd, env, home / f"{name}.log")
    agent = Path(str(node_config["agent-dir"])) if node_config.get("agent-dir") else None
    proc.agent_dir = agent
    if isolation == "veil":
        pid_file = agent / "agent.pid" if agent is not None else None
        proc.executor = _start(f"{name}-executor", executor_command(runtime_port, proc.pid,
                                                                    pid_file),
                               env, home / f"{name}-executor.log")
    return proc
