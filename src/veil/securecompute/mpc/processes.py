"""The three compute parties as OS processes over TCP with mutual TLS 1.3.

* :func:`make_certs` — a deployment CA and certificates for ``p0, p1, p2, client``.
* :func:`run_party` — one party: connect the mesh (``veil.transport.tcp.connect_mesh``:
  one persistent connection per pair, TCP_NODELAY, length-framed) and serve until told to
  stop. ``veil mpc party --id N`` calls it; so does ``python -m`` of this module.
* :class:`ProcessSession` — start three local party processes on loopback, connect as the
  client, share the model once, infer many times.

A party that dies closes its TLS connections, which the others see at once; a party that
stalls makes the others raise :class:`~veil.errors.AbortError` after ``deadline_s``.
Either way each surviving party closes its own links and exits, and the client gets an
``AbortError`` naming the failed party — no hang, no partial result.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from veil.errors import AbortError, ConfigError, PeerError, VeilError
from veil.securecompute.mpc.net import CLIENT, PARTY_NAMES
from veil.securecompute.mpc.program import MpcConfig
from veil.securecompute.mpc.roles import Client, serve_party
from veil.securecompute.mpc.session import InferenceResult

if TYPE_CHECKING:
    from veil.models.ir import Model

__all__ = ["make_certs", "run_party", "ProcessSession", "free_ports", "CA_NAME"]

CA_NAME = "veil-mpc-ca"
Address = tuple[str, int]


def make_certs(directory: str | os.PathLike[str], names: tuple[str, ...] = (*PARTY_NAMES, CLIENT)
               ) -> Path:
    """Write a CA (``veil-mpc-ca.crt``/``.key``) and one certificate + key per party.

    In a real deployment copy each party only its own ``.key`` plus all ``.crt`` files.
    """
    from veil.crypto.certs import issue, make_ca, write_pem

    d = Path(directory)
    ca = make_ca(CA_NAME)
    write_pem(ca, d)
    for n in names:
        write_pem(issue(ca, n), d)
    return d


def free_ports(n: int) -> list[int]:
    """``n`` currently free TCP ports on loopback."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _connect(name: str, addresses: Mapping[str, Address], cert_dir: Path, timeout: float):
    from veil.transport.tcp import connect_mesh

    d = Path(cert_dir)
    for f in (d / f"{name}.crt", d / f"{name}.key", d / f"{CA_NAME}.crt"):
        if not f.exists():
            raise ConfigError(f"{f} is missing; create certificates with `veil mpc certs`")
    return connect_mesh(name, dict(addresses), d / f"{name}.crt", d / f"{name}.key",
                        d / f"{CA_NAME}.crt", connect_timeout_s=timeout)


def run_party(party_id: str, addresses: Mapping[str, Address], cert_dir: str | os.PathLike[str],
              cfg: MpcConfig | None = None, connect_timeout_s: float = 60.0) -> int:
    """Run one compute party until the client stops it; returns inferences served.

    Raises:
        ConfigError: unknown party or missing certificate files.
        AbortError: a peer or the client failed or went silent.
    """
    if party_id not in PARTY_NAMES:
        raise ConfigError(f"party id must be one of {PARTY_NAMES}, got {party_id!r}")
    ch = _connect(party_id, addresses, Path(cert_dir), connect_timeout_s)
    try:
        return serve_party(ch, cfg)
    finally:
        ch.close()


def default_addresses(ports: list[int], host: str = "127.0.0.1") -> dict[str, Address]:
    return {n: (host, p) for n, p in zip((*PARTY_NAMES, CLIENT), ports)}


class ProcessSession:
    """Three local party processes + this process as the client, over mutual TLS.

    Args:
        model: the IR model (shared once at :meth:`start`).
        cfg: engine parameters (``deadline_s`` bounds every wait).
        cert_dir: certificates from :func:`make_certs` (a temporary set if None).

    Raises:
        AbortError: a party failed; names it.
    """

    def __init__(self, model: Model, cfg: MpcConfig | None = None,
                 cert_dir: str | os.PathLike[str] | None = None) -> None:
        self.model = model
        self.cfg = cfg or MpcConfig()
        self._tmp = None
        if cert_dir is None:
            import tempfile

            self._tmp = tempfile.TemporaryDirectory(prefix="veil-mpc-")
            cert_dir = make_certs(self._tmp.name)
        self.cert_dir = Path(cert_dir)
        self.addresses = default_addresses(free_ports(4))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.client: Client | None = None
        self.spawn_s = 0.0

    def __repr__(self) -> str:
        return f"ProcessSession(model={self.model.name!r}, parties={list(self.procs)})"

    def start(self) -> ProcessSession:
        t0 = time.perf_counter()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
        env.setdefault("OMP_NUM_THREADS", "1")
        src = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        for name in PARTY_NAMES:
            cmd = [sys.executable, "-m", "veil.securecompute.mpc.processes", "--id", name,
                   "--addresses", json.dumps(self.addresses), "--certs", str(self.cert_dir),
                   "--deadline", str(self.cfg.deadline_s)]
            self.procs[name] = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE)
        try:
            ch = _connect(CLIENT, self.addresses, self.cert_dir, max(60.0, self.cfg.deadline_s))
        except VeilError as e:
            self.close()
            raise AbortError(f"the party processes did not connect: {e}") from None
        self.spawn_s = time.perf_counter() - t0
        self.client = Client(ch, self.model, self.cfg)
        self._guard(self.client.setup)
        return self

    def _guard(self, fn, *args):  # type: ignore[no-untyped-def]
        try:
            return fn(*args)
        except (AbortError, PeerError) as e:
            dead = [n for n, p in self.procs.items() if p.poll() not in (None, 0)]
            who = f" (exited: {', '.join(dead)})" if dead else ""
            raise AbortError(f"private inference aborted{who}: {e}") from None

    def infer(self, x: np.ndarray) -> InferenceResult:
        """Private inference on the batch ``x`` by the three processes."""
        if self.client is None:
            self.start()
        assert self.client is not None
        y = self._guard(self.client.infer, x)
        assert self.client.last is not None
        return InferenceResult(y, self.client.setup_s, self.client.setup_bytes, self.client.last)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the parties (kill any that do not exit within ``timeout``)."""
        if self.client is not None:
            self.client.close()
            self.client.channel.close()
        for p in self.procs.values():
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stderr is not None:
                p.stderr.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ProcessSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m veil.securecompute.mpc.processes --id p0 --addresses JSON --certs DIR``."""
    ap = argparse.ArgumentParser(prog="veil-mpc-party")
    ap.add_argument("--id", required=True)
    ap.add_argument("--addresses", required=True, help="JSON: name -> [host, port]")
    ap.add_argument("--certs", required=True)
    ap.add_argument("--deadline", type=float, default=30.0)
    a = ap.parse_args(argv)
    addresses = {k: (v[0], int(v[1])) for k, v in json.loads(a.addresses).items()}
    try:
        run_party(a.id, addresses, a.certs, MpcConfig(deadline_s=a.deadline))
    except VeilError as e:
        print(f"{a.id}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
