"""TCP + mutual TLS 1.3 between OS processes: the same SecAgg+ round as in process, identical
sums; links refuse certificates from another CA or for another party; frames are exact."""

from __future__ import annotations

import multiprocessing as mp
import threading

import numpy as np
import pytest
from tcp_parties import (
    connect_all,
    echo_party,
    enrol,
    free_ports,
    identity,
    make_certs,
    secagg_config,
    secagg_party,
    site_input,
)

from veil.aggregation.secagg import run_round
from veil.crypto import certs
from veil.errors import LocalError, PeerError, PeerTimeoutError
from veil.transport.tcp import connect_mesh


def _mesh(tmp_path, names):
    ports = free_ports(len(names))
    return {n: ("127.0.0.1", p) for n, p in zip(names, ports)}


def _connect_all(tmp_path, addrs, **kw):
    return connect_all(tmp_path, addrs, **kw)


@pytest.mark.parametrize("malicious", [False, True], ids=["semi-honest", "malicious-server"])
def test_same_secagg_round_over_tcp_mtls_processes_as_in_process(tmp_path, malicious) -> None:
    n, dim = 3, 50
    names = ["server", *map(str, range(n))]
    make_certs(tmp_path, names)
    digest = enrol(tmp_path, n) if malicious else None  # identity files + pinned roster
    addrs = _mesh(tmp_path, names)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=secagg_party,
                         args=(nm, n, dim, addrs, str(tmp_path), q, digest)) for nm in names]
    for p in procs:
        p.start()
    results = {}
    for _ in names:
        name, a, b = q.get(timeout=120)
        results[name] = (a, b)
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert all(results[str(u)][0] == "DONE" for u in range(n)), results
    total, survivors = results["server"]
    cfg = secagg_config(n, dim, str(tmp_path), digest)
    ids = {u: identity(str(tmp_path), u) for u in range(n)} if malicious else None
    local, _ = run_round(cfg, lambda u: site_input(u, dim), identities=ids)
    expected = sum(site_input(u, dim) for u in range(n)) & np.uint64(2**20 - 1)
    assert survivors == [0, 1, 2] and list(local.survivors) == survivors
    assert np.array_equal(np.asarray(total, dtype=np.uint64), local.total)
    assert np.array_equal(local.total, expected)


def test_frames_round_trip_exactly_between_threads(tmp_path) -> None:
    names = ["a", "b", "c"]
    make_certs(tmp_path, names)
    chans, errs = _connect_all(tmp_path, _mesh(tmp_path, names))
    assert not errs and set(chans) == set(names)
    big = bytes(range(256)) * 20_000  # 5 MB, both directions at once
    chans["a"].send("b", big)
    chans["b"].send("a", big)
    chans["c"].send("a", b"")
    assert chans["b"].recv("a", 10) == big and chans["a"].recv("b", 10) == big
    assert chans["a"].recv("c", 10) == b""
    with pytest.raises(PeerTimeoutError) as e:
        chans["a"].recv("c", 0.05)
    assert e.value.peer == "c"
    with pytest.raises(LocalError):
        chans["a"].send("nobody", b"x")
    chans["c"].close()
    with pytest.raises(PeerError):
        chans["a"].recv("c", 5)
    for ch in chans.values():
        ch.close()


def test_oversized_frame_breaks_only_that_link(tmp_path) -> None:
    names = ["a", "b"]
    make_certs(tmp_path, names)
    chans, errs = _connect_all(tmp_path, _mesh(tmp_path, names), max_frame_bytes=1000)
    assert not errs
    with pytest.raises(LocalError, match="exceeds"):
        chans["a"].send("b", bytes(1001))
    chans["a"]._links["b"].max_frame = 10**6  # a peer that ignores the limit
    chans["a"].send("b", bytes(5000))
    with pytest.raises(PeerError, match="exceeds the limit"):
        chans["b"].recv("a", 5)
    for ch in chans.values():
        ch.close()


def test_certificates_from_another_ca_or_for_another_party_are_refused(tmp_path) -> None:
    names = ["a", "b"]
    make_certs(tmp_path, names)
    rogue_dir = tmp_path / "rogue"
    rogue = certs.make_ca("test-ca")
    certs.write_pem(certs.issue(rogue, "b"), rogue_dir)
    addrs = _mesh(tmp_path, names)
    res: dict[str, object] = {}

    def listen_b():  # b with a certificate from another CA
        try:
            res["b"] = connect_mesh("b", addrs, rogue_dir / "b.crt", rogue_dir / "b.key",
                                    tmp_path / "test-ca.crt", connect_timeout_s=2)
        except Exception as exc:  # noqa: BLE001
            res["b"] = exc

    t = threading.Thread(target=listen_b)
    t.start()
    with pytest.raises(PeerError):
        connect_mesh("a", addrs, tmp_path / "a.crt", tmp_path / "a.key",
                     tmp_path / "test-ca.crt", connect_timeout_s=2)
    t.join(10)
    assert isinstance(res["b"], PeerError)
    # a party presenting a valid certificate issued to someone else
    addrs2 = _mesh(tmp_path, names)
    res.clear()

    def b_as_a():
        try:
            res["b"] = connect_mesh("b", addrs2, tmp_path / "a.crt", tmp_path / "a.key",
                                    tmp_path / "test-ca.crt", connect_timeout_s=2)
        except Exception as exc:  # noqa: BLE001
            res["b"] = exc

    b_as_a()
    assert "names 'a', not 'b'" in str(res["b"])


def test_round_trips_to_two_processes(tmp_path) -> None:
    names = ["a", "e1", "e2"]
    make_certs(tmp_path, names)
    addrs = _mesh(tmp_path, names)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=echo_party, args=(nm, addrs, str(tmp_path), 50, q))
             for nm in ("e1", "e2")]
    for p in procs:
        p.start()
    ch = connect_mesh("a", addrs, tmp_path / "a.crt", tmp_path / "a.key",
                      tmp_path / "test-ca.crt", connect_timeout_s=60)
    for i in range(50):
        for e in ("e1", "e2"):
            ch.send(e, i.to_bytes(4, "big") * 100)
        for e in ("e1", "e2"):
            assert ch.recv(e, 30) == i.to_bytes(4, "big") * 100
    for _ in procs:
        assert q.get(timeout=30)[1] == "ok"
    ch.close()
    for p in procs:
        p.join(30)
