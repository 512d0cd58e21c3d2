"""The site agent: one long-lived process per SuperNode that holds the site's state.

Flower 1.42 starts a fresh ClientApp process for every message, and persists message
contents and the ClientApp ``Context`` in the SuperNode's state. A SecAgg+ site, however,
must keep its secret keys, shares and masks from one protocol stage to the next, and must
never write them where Flower stores records. So the ClientApp is only a forwarder: it
hands each envelope to this agent over a Unix socket and returns the agent's answer. The
agent keeps the :class:`~veil.deploy.site.SiteRuntime` (data, trainer, protocol party,
ledger) in its own memory.

* The socket lives in a directory only the SuperNode's OS user can open (mode 0700,
  checked); a different user cannot talk to the agent.
* The first message of a SuperNode starts the agent (``python -m veil.deploy.agent``) in
  its own session; the agent exits when the process that started it (the SuperNode's
  executor) is gone, and writes its PID to ``agent.pid`` so operators and tests can stop it.
* Frames: a 4-byte big-endian header length, a JSON header, an 8-byte payload length and
  the payload bytes.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from veil.errors import ConfigError, LocalError, ProtocolError, VeilError
from veil.transport.flower import Envelope

__all__ = ["agent_dir", "forward", "serve", "main"]

SOCKET = "agent.sock"
PIDFILE = "agent.pid"
LOG = "agent.log"
START_TIMEOUT_S = 120.0


# ---------------------------------------------------------------------------- framing
def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise LocalError("site agent connection closed mid-frame")
        buf += chunk
    return bytes(buf)


def send_frame(conn: socket.socket, header: Mapping[str, Any], payload: bytes = b"") -> None:
    """Write one frame."""
    h = json.dumps(dict(header), sort_keys=True).encode()
    conn.sendall(struct.pack(">I", len(h)) + h + struct.pack(">Q", len(payload)) + payload)


def recv_frame(conn: socket.socket) -> tuple[dict[str, Any], bytes]:
    """Read one frame.

    Raises:
        LocalError: the peer closed the connection mid-frame.
    """
    (hl,) = struct.unpack(">I", _recv_exact(conn, 4))
    header = json.loads(_recv_exact(conn, hl))
    (pl,) = struct.unpack(">Q", _recv_exact(conn, 8))
    return header, _recv_exact(conn, pl)


def _env_header(env: Envelope) -> dict[str, Any]:
    return {"kind": env.kind, "round": env.round, "meta": dict(env.meta)}


def _env_from(header: Mapping[str, Any], payload: bytes) -> Envelope:
    return Envelope(str(header["kind"]), int(header["round"]), payload, header.get("meta", {}))


# ---------------------------------------------------------------------- ClientApp side
def agent_dir(node_config: Mapping[str, Any], node_id: int) -> Path:
    """The private directory of this SuperNode's agent (created with mode 0700).

    ``agent-dir`` in the node config chooses it; the default is per user and node id
    under the system temporary directory.

    Raises:
        ConfigError: the directory is not owned by this user or others can open it.
    """
    base = node_config.get("agent-dir")
    d = (
        Path(str(base))
        if base
        else Path(tempfile.gettempdir()) / f"veil-agent-{os.getuid()}" / f"node-{node_id}"
    )
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = d.stat()
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(
            f"site agent directory {d} must belong to this user with mode 0700",
            key="node-config.agent-dir",
        )
    return d


def _connect(path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
    except OSError:
        s.close()
        return None
    return s


def _ensure_agent(d: Path, parent_pid: int) -> socket.socket:
    sock = _connect(d / SOCKET)
    if sock is not None:
        return sock
    with open(d / "spawn.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _connect(d / SOCKET)
        if sock is not None:
            return sock
        (d / SOCKET).unlink(missing_ok=True)
        with open(d / LOG, "ab") as log:
            subprocess.Popen(
                [sys.executable, "-m", "veil.deploy.agent", "--dir", str(d),
                 "--parent-pid", str(parent_pid)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                close_fds=True,
            )
        t0 = time.monotonic()
        while time.monotonic() - t0 < START_TIMEOUT_S:
            sock = _connect(d / SOCKET)
            if sock is not None:
                return sock
            time.sleep(0.05)
    raise LocalError(f"site agent did not start within {START_TIMEOUT_S:.0f} s (see {d / LOG})")


def forward(
    node_config: Mapping[str, Any], node_id: int, run_id: int, env: Envelope
) -> Envelope:
    """Hand ``env`` to this SuperNode's agent (starting it if needed); return its answer.

    Raises:
        LocalError: the agent cannot be reached.
    """
    d = agent_dir(node_config, node_id)
    sock = _ensure_agent(d, os.getppid())
    with sock:
        header = {"run_id": int(run_id), "node_config": dict(node_config), **_env_header(env)}
        send_frame(sock, header, env.payload)
        h, payload = recv_frame(sock)
    return _env_from(h, payload)


# -------------------------------------------------------------------------- agent side
class _Agent:
    """The agent's state: one :class:`SiteRuntime` per run (only the latest run is kept).

    When the run's ``hello`` names a stage link (:mod:`veil.deploy.stagelink`), the agent
    dials it after accepting the run and answers the protocol stages that arrive there
    with the same runtime, one message at a time (a lock serialises them with Flower's).
    """

    def __init__(self) -> None:
        self.run_id: int | None = None
        self.site: Any = None
        self.link: Any = None  # the StarClient of the current run's stage link
        self._lock = threading.Lock()

    def handle(self, header: Mapping[str, Any], payload: bytes) -> Envelope:
        env = _env_from(header, payload)
        run_id = int(header["run_id"])
        try:
            with self._lock:
                if env.kind == "hello":  # a new run: the site rebuilds from its own config
                    from veil.deploy.site import SiteRuntime

                    self._close_link()
                    self.site, self.run_id = None, run_id
                    self.site = SiteRuntime(header.get("node_config", {}))
                if self.site is None or self.run_id != run_id:
                    raise LocalError(
                        f"no site state for run {run_id} (the hello was not received)")
                out = self.site.handle(env)
                if env.kind == "hello" and env.meta.get("stage_link"):
                    out = self._dial(header.get("node_config", {}), env, out)
        except VeilError as exc:  # typed errors go back to the server by name
            return Envelope("error", env.round, b"", {"error": type(exc).__name__,
                                                       "message": str(exc)})
        return out if out is not None else Envelope("none", env.round)

    def _dial(self, node_config: Mapping[str, Any], env: Envelope, out: Envelope) -> Envelope:
        """Connect to the coordinator's stage link; the hello reply says so."""
        from veil.deploy.stagelink import dial_stage_link

        site, run_id = self.site, self.run_id
        link = dial_stage_link(node_config, site.site_id, str(env.meta["stage_link"]))

        def on_stage(e: Envelope) -> Envelope | None:
            if e.kind != "stage":  # hello and train (the model) come over Flower only
                raise ProtocolError(f"a {e.kind!r} message over the stage link; refused",
                                    peer="coordinator")
            with self._lock:
                if self.site is not site or self.run_id != run_id:
                    raise LocalError(f"no site state for run {run_id} (a newer run started)")
                return site.handle(e)

        link.serve_in_thread(on_stage)
        self.link = link
        return Envelope(out.kind, out.round, out.payload, {**out.meta, "stage_link": True})

    def _close_link(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None


def serve(d: Path, parent_pid: int | None = None) -> None:
    """Run the agent on ``d/agent.sock`` until the parent process is gone."""
    (d / PIDFILE).write_text(str(os.getpid()))
    if parent_pid:
        from veil.deploy.processes import exit_with_parent

        exit_with_parent(parent_pid, lambda: (d / SOCKET).unlink(missing_ok=True))
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = d / SOCKET
    path.unlink(missing_ok=True)
    old = os.umask(0o077)
    try:
        srv.bind(str(path))
    finally:
        os.umask(old)
    srv.listen(8)
    agent = _Agent()
    while True:
        conn, _ = srv.accept()
        with conn:
            try:
                header, payload = recv_frame(conn)
            except (LocalError, OSError, ValueError):
                continue
            out = agent.handle(header, payload)
            try:
                send_frame(conn, _env_header(out), out.payload)
            except OSError:
                continue


def main(argv: list[str] | None = None) -> int:
    """``python -m veil.deploy.agent --dir DIR [--parent-pid PID]``."""
    ap = argparse.ArgumentParser(description="veil site agent (started by the ClientApp)")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--parent-pid", type=int, default=None)
    args = ap.parse_args(argv)
    serve(Path(args.dir), args.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
