"""Process entry points for the TCP + mutual TLS tests (importable by spawned children)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np

from veil.crypto import certs


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def make_certs(directory: Path, names: list[str]) -> None:
    ca = certs.make_ca("test-ca")
    certs.write_pem(ca, directory)
    for n in names:
        certs.write_pem(certs.issue(ca, n), directory)


def site_input(u: int, dim: int) -> np.ndarray:
    return np.random.default_rng(1000 + u).integers(0, 2**20, dim, dtype=np.uint64)


def secagg_config(n: int, dim: int):
    from veil.protocols.secagg import SecAggConfig

    return SecAggConfig(5, tuple(range(n)), dim, 20, n - 1, n // 2 + 1, bytes(range(32)))


def secagg_party(name: str, n: int, dim: int, addresses, certdir: str, out) -> None:
    """Run one SecAgg+ party (server or site ``name``) over TCP + mTLS; put its result."""
    from veil.protocols.secagg import SERVER, SecAggClient, SecAggServer, site_of
    from veil.transport.loop import run_party
    from veil.transport.tcp import connect_mesh

    d = Path(certdir)
    cfg = secagg_config(n, dim)
    peers = addresses if name == SERVER else {k: addresses[k] for k in (name, SERVER)}
    ch = connect_mesh(name, peers, d / f"{name}.crt", d / f"{name}.key", d / "test-ca.crt",
                      connect_timeout_s=60)
    try:
        if name == SERVER:
            party = SecAggServer(cfg)
        else:
            party = SecAggClient(cfg, site_of(name), site_input(site_of(name), dim))
        run_party(party, ch, stage_deadline_s=20, idle_timeout_s=60)
        if name == SERVER:
            out.put((name, party.result.total.tolist(), list(party.result.survivors)))
        else:
            out.put((name, party.state.value, None))
    except Exception as exc:  # reported to the test
        out.put((name, f"error {type(exc).__name__}: {exc}", None))
    finally:
        ch.close()


def echo_party(name: str, addresses, certdir: str, rounds: int, out) -> None:
    """Echo every frame back to its sender ``rounds`` times (for round trips)."""
    from veil.transport.tcp import connect_mesh

    d = Path(certdir)
    ch = connect_mesh(name, addresses, d / f"{name}.crt", d / f"{name}.key", d / "test-ca.crt",
                      connect_timeout_s=60)
    try:
        for _ in range(rounds):
            sender, data = ch.recv_any(timeout=60)
            ch.send(sender, data)
        out.put((name, "ok", None))
    finally:
        time.sleep(0.5)  # keep the link open until the peer has read the last echo
        ch.close()
