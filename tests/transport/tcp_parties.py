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


def connect_all(directory: Path, addrs: dict, peers_of=None, **kw):
    """Connect every party of ``addrs`` in its own thread; ``peers_of(name)`` limits whom a
    party connects to (default: everyone, a full mesh). Returns (channels, errors)."""
    import threading

    from veil.transport.tcp import connect_mesh

    out, errs = {}, []

    def one(n):
        mine = addrs if peers_of is None else {p: addrs[p] for p in (n, *peers_of(n))}
        try:
            out[n] = connect_mesh(n, mine, directory / f"{n}.crt", directory / f"{n}.key",
                                  directory / "test-ca.crt", **kw)
        except Exception as exc:  # noqa: BLE001
            errs.append((n, exc))

    threads = [threading.Thread(target=one, args=(n,)) for n in addrs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out, errs


def site_input(u: int, dim: int) -> np.ndarray:
    return np.random.default_rng(1000 + u).integers(0, 2**20, dim, dtype=np.uint64)


def enrol(directory: Path, n: int) -> str:
    """Create n site identities and the roster file; returns the roster's pinned digest."""
    from veil.crypto.identity import Roster, SiteIdentity

    ids = [SiteIdentity.generate(u) for u in range(n)]
    for i in ids:
        i.save(directory / "ids")
    roster = Roster.of("tcp-test", ids)
    (directory / "roster.json").write_text(roster.to_json())
    return roster.digest().hex()


def secagg_config(n: int, dim: int, certdir: str | None = None, digest: str | None = None):
    """The round's parameters; with a pinned roster digest, the malicious-server mode."""
    from veil.crypto.identity import Roster
    from veil.protocols.secagg import SecAggConfig

    roster = None
    if digest is not None and certdir is not None:
        roster = Roster.from_json((Path(certdir) / "roster.json").read_text(), digest)
    t = n // 2 + 1 if roster is None else n - 1
    return SecAggConfig(5, tuple(range(n)), dim, 20, n - 1, t, bytes(range(32)), roster,
                        bytes(range(1, 33)))


def identity(certdir: str, u: int):
    from veil.crypto.identity import SiteIdentity

    return SiteIdentity.load(u, Path(certdir) / "ids" / f"site-{u}.key")


def secagg_party(name: str, n: int, dim: int, addresses, certdir: str, out,
                 digest: str | None = None) -> None:
    """Run one SecAgg+ party (server or site ``name``) over TCP + mTLS; put its result."""
    from veil.protocols.secagg import SERVER, SecAggClient, SecAggServer, site_of
    from veil.transport.loop import run_party
    from veil.transport.tcp import connect_mesh

    d = Path(certdir)
    cfg = secagg_config(n, dim, certdir, digest)
    peers = addresses if name == SERVER else {k: addresses[k] for k in (name, SERVER)}
    ch = connect_mesh(name, peers, d / f"{name}.crt", d / f"{name}.key", d / "test-ca.crt",
                      connect_timeout_s=60)
    try:
        if name == SERVER:
            party = SecAggServer(cfg)
        else:
            u = site_of(name)
            ident = identity(certdir, u) if cfg.malicious else None
            party = SecAggClient(cfg, u, site_input(u, dim), ident)
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
