"""A whole deployment on one machine: a SuperLink and N SuperNodes on loopback.

What the tests and ``veil bench deploy`` use; the multi-machine guide
(docs/deployment.md) runs the same pieces one per machine with ``veil deploy ...``.

Example (``run.toml`` has ``federation.transport = "flower"``; every site reads it as its
own copy of the run config):
    >>> from veil.deploy import LocalDeployment
    >>> sites = [{"dataset": "digits", "partition-id": i, "config": "run.toml"}
    ...          for i in range(3)]
    >>> with LocalDeployment("/tmp/d", sites) as dep:                   # doctest: +SKIP
    ...     status, record = dep.run("run.toml", "/tmp/d/run")           # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from veil.deploy.processes import Proc, free_port, start_superlink, start_supernode
from veil.deploy.runs import flwr_run, run_log, write_app, write_connection
from veil.errors import AbortError, LocalError

__all__ = ["LocalDeployment", "read_result"]


def read_result(out_dir: str | os.PathLike[str], status: str) -> dict[str, Any]:
    """The record a finished run wrote, checked against Flower's status.

    Raises:
        AbortError: the run failed or a round aborted (the message says which and why).
    """
    path = Path(out_dir) / "record.json"
    record: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    final = record.get("final", {})
    if status != "finished:completed" or final.get("status") != "completed":
        aborted = [r["aborted"] for r in record.get("rounds", []) if "aborted" in r]
        why = aborted[0] if aborted else f"see {Path(out_dir) / 'serverapp.log'}"
        raise AbortError(f"deployed run ended {status or 'unknown'}: {why}")
    return record


class LocalDeployment:
    """Start a SuperLink and one SuperNode per node config; stop them all on exit.

    Args:
        workdir: where FLWR_HOMEs, logs and the app bundle go.
        sites: one node config per SuperNode: ``config`` (the site's own copy of the run
            config), ``partition-id``, and ``data`` (its own file) or ``dataset``.
        tls: serve the SuperLink over TLS with certificates made for 127.0.0.1.
        isolation: ``"veil"`` (a long-lived site executor per SuperNode, the default) or
            ``"subprocess"`` (Flower's ClientApp process per message, needed by apps that
            are not veil's, e.g. Flower's own SecAgg+ in ``veil bench deploy``).
        stage_link: also give every site and the coordinator certificates of a stage CA
            (:func:`veil.deploy.stagelink.write_stage_certs`); runs then take SecAgg+'s
            later stages over the direct link (``run(..., stage_link=True)``).
    """

    def __init__(
        self, workdir: str | os.PathLike[str], sites: Sequence[Mapping[str, Any]],
        tls: bool = False, isolation: str = "veil", stage_link: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.site_configs = [dict(s) for s in sites]
        self.tls = tls
        self.isolation = isolation
        self.stage_files: dict[str, Path] = {}
        if stage_link:
            from veil.deploy.stagelink import site_party, write_stage_certs

            self.stage_files = write_stage_certs(self.workdir / "stage-certs",
                                                 1 + max(int(s["partition-id"]) for s in sites))
            for nc in self.site_configs:
                me = site_party(nc["partition-id"])
                nc.update({"stage-cert": str(self.stage_files[me]),
                           "stage-key": str(self.stage_files[f"{me}-key"]),
                           "stage-ca": str(self.stage_files["ca"])})
        self.superlink: Proc | None = None
        self.supernodes: list[Proc] = []
        self.root_cert: str | None = None
        self.address = ""
        # short private directory for the agents' Unix sockets (path length limit)
        self._agents = Path(tempfile.mkdtemp(prefix="veil-ag-"))

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the SuperLink, then the SuperNodes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        home = self.workdir / "superlink"
        certs = None
        if self.tls:
            from veil.deploy.tls import write_superlink_certs

            ca, crt, key = write_superlink_certs(self.workdir / "certs", ["127.0.0.1", "localhost"])
            certs, self.root_cert = (str(ca), str(crt), str(key)), str(ca)
        port = free_port()
        self.superlink = start_superlink(home, port, certs=certs)
        self.address = f"127.0.0.1:{port}"
        for i, nc in enumerate(self.site_configs):
            nc = dict(nc)
            agent = self._agents / f"n{i}"
            agent.mkdir(mode=0o700, exist_ok=True)
            nc.setdefault("agent-dir", str(agent))
            self.supernodes.append(
                start_supernode(self.workdir / f"node{i}", self.address, nc, free_port(),
                                root_cert=self.root_cert, name=f"supernode{i}",
                                isolation=self.isolation)
            )
        self.app = write_app(self.workdir / "app")
        write_connection(home, self.address, self.root_cert)

    def run(
        self,
        config: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        stage_timeout_s: float = 30.0,
        train_timeout_s: float | None = None,
        timeout_s: float = 600.0,
        check: bool = True,
        roster: str | os.PathLike[str] | None = None,
        stage_link: bool = False,
    ) -> tuple[str, dict[str, Any]]:
        """Submit the veil run ``config`` and wait for it.

        Args:
            roster: the enrolled sites' roster file (SecAgg+'s malicious-server mode).
            stage_link: SecAgg+'s stages after the first over the coordinator's direct
                mutual-TLS link on a free loopback port (needs ``stage_link=True`` at
                construction).

        Returns:
            ``(Flower status, record)``.

        Raises:
            AbortError: (``check``) the run failed or a round aborted.
            LocalError: Flower could not run it at all.
        """
        if self.superlink is None:
            raise LocalError("start the deployment first")
        rc = {
            "veil-config": str(Path(config).resolve()),
            "out-dir": str(Path(out_dir).resolve()),
            "stage-timeout": float(stage_timeout_s),
            "train-timeout": float(train_timeout_s or 0.0),
            "min-nodes": len(self.supernodes),
            "roster": str(Path(roster).resolve()) if roster else "",
        }
        if stage_link:
            if not self.stage_files:
                raise LocalError("this deployment has no stage certificates: "
                                 "LocalDeployment(..., stage_link=True)")
            f = self.stage_files
            rc.update({"stage-listen": f"127.0.0.1:{free_port()}", "stage-cert":
                       str(f["coordinator"]), "stage-key": str(f["coordinator-key"]),
                       "stage-ca": str(f["ca"])})
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "record.json").unlink(missing_ok=True)
        run_id, status = flwr_run(self.workdir / "superlink", self.app, rc, timeout_s,
                                  record=out / "record.json")
        if status != "finished:completed":  # keep Flower's log of the ServerApp for the post-mortem
            (out / "serverapp.log").write_text(run_log(self.workdir / "superlink", run_id))
        if check:
            return status, read_result(out_dir, status)
        path = out / "record.json"
        return status, json.loads(path.read_text()) if path.exists() else {}

    def kill_site(self, i: int) -> None:
        """Crash SuperNode ``i`` and its site agent (SIGKILL, by PID)."""
        self.supernodes[i].kill()
        self.supernodes[i].stop(timeout_s=2.0)

    def logs(self) -> str:
        """Tails of every process log (for failing tests)."""
        procs = ([self.superlink] if self.superlink else []) + self.supernodes
        procs += [p.executor for p in self.supernodes if p.executor is not None]
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in procs)

    def stop(self) -> None:
        """Stop every process this deployment started (by PID), SuperNodes first."""
        procs = [*self.supernodes, *([self.superlink] if self.superlink else [])]
        for p in procs:  # SIGTERM all at once, then each gets a short grace period
            p.terminate()
        for p in procs:
            p.stop(timeout_s=1.0)
        for d in self._agents.glob("n*"):
            pid = d / "agent.pid"
            if pid.exists():
                try:
                    os.kill(int(pid.read_text()), 9)
                except (ProcessLookupError, ValueError, PermissionError):
                    pass
        time.sleep(0.1)
