"""The star transport (coordinator listens, sites dial out, mutual TLS 1.3): stage exchanges
with GridLink's semantics, against stale replies, foreign certificates, impersonated
coordinators, malformed frames and restarted sites."""

from __future__ import annotations

import random
import socket
import ssl
import threading
import time
from contextlib import ExitStack, suppress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.crypto import certs
from veil.errors import IntegrityError, LocalError, MalformedMessageError, PeerError, ProtocolError
from veil.transport.flower import Envelope
from veil.transport.sidechannels import SideChannels
from veil.transport.star import (
    MAX_HEADER_BYTES,
    StarClient,
    StarServer,
    decode_envelope,
    decode_frame,
    encode_envelope,
)
from veil.transport.tcp import tls_context

SITES = ["site-0", "site-1", "site-2"]
LOCAL = ("127.0.0.1", 0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The deployment's CA (coordinator, sites 0-2 and an unlisted site-9) and a foreign CA
    that also issued a 'site-1' and a 'coordinator'."""
    d = tmp_path_factory.mktemp("pki")
    ca = certs.make_ca("test-ca")
    certs.write_pem(ca, d)
    for n in ["coordinator", *SITES, "site-9"]:
        certs.write_pem(certs.issue(ca, n), d)
    evil = certs.make_ca("evil-ca")
    certs.write_pem(evil, d / "evil")
    for n in ["site-1", "coordinator"]:
        certs.write_pem(certs.issue(evil, n), d / "evil")
    return d


def _server(pki, name="coordinator", sub="", **kw) -> StarServer:
    return StarServer(LOCAL, pki / sub / f"{name}.crt", pki / sub / f"{name}.key",
                      pki / "test-ca.crt", parties=kw.pop("parties", SITES), **kw)


def _client(pki, server, name, sub="", **kw) -> StarClient:
    return StarClient(server.address, pki / sub / f"{name}.crt", pki / sub / f"{name}.key",
                      pki / "test-ca.crt", name, connect_timeout_s=5.0, **kw)


def _echo(name, seen=None):
    def handler(env: Envelope) -> Envelope:
        if seen is not None:
            seen.append(env)
        if env.kind == "boom":
            raise ProtocolError("stage not allowed here", peer="coordinator")
        return Envelope("reply", env.round, env.payload[::-1] + name.encode(),
                        {"site": name, "got": dict(env.meta)})
    return handler


def _star(stack, pki, handlers, **kw):
    server = stack.enter_context(_server(pki, **kw))
    clients = {}
    for name, h in handlers.items():
        clients[name] = stack.enter_context(_client(pki, server, name))
        clients[name].serve_in_thread(h)
    assert server.wait_for(handlers, 5.0) == set(handlers)
    return server, clients


def _hostile(pki, server, crt, key, forged: list[bytes]) -> None:
    """Dial with ``crt`` and push forged replies (4-byte framed) at once; errors ignored."""
    ctx = tls_context(crt, key, pki / "test-ca.crt", server_side=False)
    with suppress(OSError, ssl.SSLError), socket.create_connection(server.address, 2) as raw:
        with ctx.wrap_socket(raw) as tls:
            for f in forged:
                tls.sendall(len(f).to_bytes(4, "big") + f)
            time.sleep(0.1)


def test_round_trip_two_exchanges_and_stats(pki) -> None:
    with ExitStack() as stack:
        server, _ = _star(stack, pki, {n: _echo(n) for n in SITES})
        big = bytes(range(256)) * 4096  # 1 MiB down
        sent = {}
        for r, body in enumerate([b"abc", big]):
            out = {n: Envelope("stage", r, body + n.encode(), {"i": i})
                   for i, n in enumerate(SITES)}
            got = server.exchange(out, 10.0)
            assert got == {n: _echo(n)(out[n]) for n in SITES}
            for n in SITES:
                sent[n] = sent.get(n, 0) + len(out[n].payload)
        boom = server.exchange({"site-2": Envelope("boom", 7)}, 10.0)["site-2"]
        assert (boom.kind, boom.round, boom.payload) == ("error", 7, b"")
        assert boom.meta["error"] == "ProtocolError" and "stage not allowed" in boom.meta["message"]
        st_ = server.stats
        assert st_.exchanges == 3 and len(st_.seconds) == 3
        assert {n: st_.bytes_down[n] for n in SITES[:2]} == {n: sent[n] for n in SITES[:2]}
        assert st_.bytes_up["site-0"] == sent["site-0"] + 2 * len(b"site-0")
        with pytest.raises(LocalError):
            server.exchange({"site-7": Envelope("stage")}, 1.0)


def test_slow_site_is_absent_and_its_stale_reply_is_not_replayed(pki) -> None:
    def slow(env: Envelope) -> Envelope:
        if env.round == 0:
            time.sleep(1.2)  # past the first deadline; the reply lands in exchange 2
            return Envelope("reply", 0, b"stale")
        return Envelope("reply", env.round, b"fresh")

    with ExitStack() as stack:
        server, clients = _star(stack, pki, {"site-0": _echo("site-0"), "site-1": slow})
        out = {n: Envelope("stage", 0, b"x") for n in ["site-0", "site-1"]}
        first = server.exchange(out, 0.6)
        assert set(first) == {"site-0"}
        second = server.exchange({"site-1": Envelope("stage", 1, b"y")}, 5.0)
        assert second["site-1"].payload == b"fresh" and second["site-1"].round == 1
        # unsolicited frames between exchanges, one pre-answering exchange 3, are ignored
        clients["site-0"]._link.send(b"\x00\x00\x00\x09not a frame")
        clients["site-0"]._link.send(encode_envelope(Envelope("reply", 2, b"pre"), 3))
        time.sleep(0.1)
        third = server.exchange({"site-0": Envelope("stage", 2, b"z")}, 5.0)
        assert third["site-0"].payload == b"z" + b"site-0"
        t0 = time.monotonic()
        assert server.exchange({"site-2": Envelope("stage", 2)}, 5.0) == {}  # not connected
        assert time.monotonic() - t0 < 2.5


def test_malformed_reply_makes_the_site_absent(pki) -> None:
    with ExitStack() as stack:
        server = stack.enter_context(_server(pki))
        c = stack.enter_context(_client(pki, server, "site-0"))

        def garbage(env: Envelope) -> None:
            c._link.send(b"\xff" * 9)  # a well-framed but undecodable reply
            c._link.send(encode_envelope(Envelope("reply", env.round, b"late-valid"), 1))

        c.serve_in_thread(garbage)
        assert server.wait_for(["site-0"], 5.0)
        t0 = time.monotonic()
        assert server.exchange({"site-0": Envelope("stage", 0)}, 5.0) == {}
        assert time.monotonic() - t0 < 2.5  # absent at once, not at the deadline


def test_foreign_ca_and_unlisted_site_cannot_answer_for_site_1(pki) -> None:
    evil = pki / "evil"
    attacks: list[str] = []

    def forged_frames() -> list[bytes]:
        return [encode_envelope(Envelope("reply", 0, b"EVIL"), x) for x in range(1, 6)]

    def real_site_1(env: Envelope) -> Envelope:
        # while the exchange is open, the hostile parties try to answer in site-1's place
        _hostile(pki, server, evil / "site-1.crt", evil / "site-1.key", forged_frames())
        _hostile(pki, server, pki / "site-9.crt", pki / "site-9.key", forged_frames())
        attacks.append("done")
        return Envelope("reply", env.round, b"REAL")

    with ExitStack() as stack:
        server, _ = _star(stack, pki, {"site-0": _echo("site-0"), "site-1": real_site_1})
        got = server.exchange({"site-0": Envelope("stage", 0), "site-1": Envelope("stage", 0)},
                              10.0)
        assert attacks == ["done"]
        assert got["site-1"].payload == b"REAL" and set(got) == {"site-0", "site-1"}
        assert all(b"EVIL" not in e.payload for e in got.values())
        # an unlisted site of the right CA, staying connected, is never a party
        nine = stack.enter_context(_client(pki, server, "site-9"))
        nine.serve_in_thread(lambda env: Envelope("reply", env.round, b"EVIL"))
        assert server.wait_for(["site-9"], 0.3) == frozenset()
        assert server.connected == {"site-0", "site-1"}
        # the foreign-CA client, on its own, never becomes site-1 either
        with suppress(PeerError):
            with _client(pki, server, "site-1", sub="evil") as fake:
                fake.serve_in_thread(lambda env: Envelope("reply", env.round, b"EVIL"))
                time.sleep(0.2)
                again = server.exchange({"site-1": Envelope("stage", 1)}, 5.0)
                assert again["site-1"].payload == b"REAL"


def test_site_that_stops_reading_cannot_hold_the_exchange_or_its_sender(pki) -> None:
    with ExitStack() as stack:
        server, _ = _star(stack, pki, {"site-0": _echo("site-0")})
        ctx = tls_context(pki / "site-1.crt", pki / "site-1.key", pki / "test-ca.crt", False)
        mute = stack.enter_context(ctx.wrap_socket(socket.create_connection(server.address, 2)))
        assert server.wait_for(["site-1"], 5.0) == {"site-1"}  # connected, never reads
        huge = b"\x00" * (48 << 20)  # far more than the socket buffers hold
        t0 = time.monotonic()
        got = server.exchange({"site-0": Envelope("stage", 0, b"a"),
                               "site-1": Envelope("stage", 0, huge)}, 1.0)
        assert set(got) == {"site-0"} and time.monotonic() - t0 < 3.0
        deadline = time.monotonic() + 3.0  # the half-sent frame is abandoned, the link closed
        while "site-1" in server.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.connected == {"site-0"}
        assert server.exchange({"site-0": Envelope("stage", 1, b"b")}, 5.0)["site-0"].round == 1
        mute.close()


@pytest.mark.parametrize("who", ["site-2", "evil/coordinator"])
def test_site_refuses_an_impersonated_coordinator(pki, who) -> None:
    sub, _, name = who.rpartition("/")
    seen: list[Envelope] = []
    with _server(pki, name=name, sub=sub) as fake:
        with pytest.raises(IntegrityError if name == "site-2" else PeerError):
            c = _client(pki, fake, "site-0")
            c.serve_in_thread(_echo("site-0", seen))  # not reached
        fake.wait_for(["site-0"], 0.3)
        assert fake.exchange({"site-0": Envelope("stage", 0, b"secret")}, 0.5) == {}
    assert seen == []


def test_fixed_deadlines_last_the_timeout_and_order_by_the_seeded_shuffle(pki) -> None:
    sc = SideChannels(fixed_deadlines=True, shuffle=random.Random(3).shuffle)
    ref = SideChannels(shuffle=random.Random(3).shuffle)
    with ExitStack() as stack:
        server, _ = _star(stack, pki, {n: _echo(n) for n in SITES}, side_channels=sc)
        for r in range(2):
            t0 = time.monotonic()
            got = server.exchange({n: Envelope("stage", r) for n in SITES}, 0.8)
            assert time.monotonic() - t0 >= 0.8
            assert list(got) == [n for n, _ in ref.order([(n, None) for n in SITES])]


def test_restarted_site_is_served_on_its_new_connection(pki) -> None:
    with ExitStack() as stack:
        server, clients = _star(stack, pki, {"site-0": lambda e: Envelope("old", e.round)})
        old = clients["site-0"]
        new = stack.enter_context(_client(pki, server, "site-0"))
        new_thread = new.serve_in_thread(lambda e: Envelope("new", e.round))
        deadline = time.monotonic() + 5.0
        while old._link.reader.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)  # the server closes the replaced connection
        assert not old._link.reader.is_alive()
        assert server.exchange({"site-0": Envelope("stage", 0)}, 5.0)["site-0"].kind == "new"
        assert new_thread.is_alive() and server.connected == {"site-0"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_malformed(data) -> None:
    try:
        env = decode_envelope(data)
    except MalformedMessageError:
        return
    assert isinstance(env, Envelope) and isinstance(env.payload, bytes)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20), st.integers(-1, 2**40), st.binary(max_size=500),
       st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4),
       st.integers(0, 2**31))
def test_codec_round_trip(kind, rnd, payload, meta, x) -> None:
    env = Envelope(kind, rnd, payload, meta)
    assert decode_frame(encode_envelope(env, x)) == (x, env)


def _frame(header: bytes, payload: bytes = b"p") -> bytes:
    return len(header).to_bytes(4, "big") + header + payload


@pytest.mark.parametrize("data", [
    b"", b"\x00\x00", b"\x00\x00\x00\x10{}", b"\xff\xff\xff\xff" + b"x" * 10,
    _frame(b"[1,2]"), _frame(b"\xc3\x28"), _frame(b"{" * 5000),
    _frame(b'{"v":1,"x":1,"kind":"k","round":0}'),
    _frame(b'{"v":1,"x":1,"kind":"k","round":0,"meta":{},"extra":1}'),
    _frame(b'{"v":1,"x":1,"kind":"k","round":true,"meta":{}}'),
    _frame(b'{"v":1,"x":-1,"kind":"k","round":0,"meta":{}}'),
    _frame(b'{"v":2,"x":1,"kind":"k","round":0,"meta":{}}'),
    _frame(b'{"v":1,"x":1,"kind":"k","round":0,"meta":{"a":NaN}}'),
    _frame(b'{"v":1,"x":1,"x":2,"kind":"k","round":0,"meta":{}}'),
    _frame(b'{"v":1,"x":1,"kind":3,"round":0,"meta":[]}'),
    _frame(b"[" * 60000 + b"]" * 60000),
], ids=lambda d: repr(d[:12]))
def test_malformed_frames_are_refused(data) -> None:
    with pytest.raises(MalformedMessageError):
        decode_frame(data)


def test_encode_refuses_unencodable_meta() -> None:
    with pytest.raises(LocalError):
        encode_envelope(Envelope("k", 0, b"", {"x": float("nan")}))
    with pytest.raises(LocalError):
        encode_envelope(Envelope("k", 0, b"", {"x": "a" * MAX_HEADER_BYTES}))
    with pytest.raises(LocalError):
        encode_envelope(Envelope("k", 0, b"", {"x": object()}))


def test_close_is_idempotent_and_exchange_after_close_is_local_error(pki) -> None:
    server = _server(pki)
    threading.Thread(target=server.close).start()
    server.close()
    server.close()
    with pytest.raises(LocalError):
        server.exchange({"site-0": Envelope("stage")}, 0.1)
