"""A misbehaving server or link: refused requests, tampering, replay, malformed bytes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from secagg_harness import inputs_for, plain_sum, reply, run_until

from veil.aggregation.secagg import run_round
from veil.errors import (
    IntegrityError,
    MalformedMessageError,
    PeerError,
    ProtocolError,
)
from veil.protocols.secagg import TRANSITIONS, SecAggConfig, State
from veil.protocols.secagg import messages as m


def cfg_for(n: int = 7, k: int = 4, d: int = 12, rnd: int = 0) -> SecAggConfig:
    return SecAggConfig(rnd, tuple(range(n)), d, 24, k, k // 2 + 1, bytes(32))


def test_request_for_both_secrets_of_a_peer_is_refused() -> None:
    cfg = cfg_for()
    x = inputs_for(cfg, seed=7)
    _, clients, inbox = run_until(cfg, x, "unmask")
    req = m.decode(inbox[0], cfg)
    peer = req.seed_of[0]
    bad = dataclasses.replace(req, key_of=tuple(sorted({*req.key_of, peer})))
    with pytest.raises(ProtocolError, match="both secrets"):
        reply(clients[0], bad.to_bytes())
    assert clients[0].state is State.ERROR


def test_key_share_of_a_survivor_is_refused() -> None:
    cfg = cfg_for()
    x = inputs_for(cfg, seed=7)
    _, clients, inbox = run_until(cfg, x, "unmask")
    req = m.decode(inbox[0], cfg)
    bad = dataclasses.replace(req, seed_of=req.seed_of[1:], key_of=(req.seed_of[0],))
    with pytest.raises(ProtocolError, match="inconsistent"):
        reply(clients[0], bad.to_bytes())


def test_inconsistent_survivor_lists_are_detected() -> None:
    cfg = cfg_for(n=7, k=6)
    x = inputs_for(cfg, seed=7)
    # the server tells site 0 that site 6 dropped, and everybody else that it survived
    def tamper(stage, site, direction, data):
        if stage == "masked" and direction == "down" and site == 0:
            msg = m.decode(data, cfg)
            return dataclasses.replace(msg, survivors=msg.survivors[:-1]).to_bytes()
        return data

    # a link that alters the list: site 0 vouches for a different list; its tags are
    # refused and the round goes on without it, with an exact sum
    out, trace = run_round(cfg, x.__getitem__, tamper=tamper)
    assert ("server", "consistency", "ProtocolError") in trace.errors
    assert np.array_equal(out.total, plain_sum(cfg, x, out.survivors))
    # a lying server that forwards the tags anyway: site 1 sees that site 0's tag is over
    # another list (IntegrityError) and reveals nothing
    _, clients, inbox = run_until(cfg, x, "consistency")
    lie = m.decode(inbox[0], cfg)
    tag_msg = m.decode(reply(clients[0],
        dataclasses.replace(lie, survivors=lie.survivors[:-1]).to_bytes()), cfg)
    honest = {u: m.decode(reply(clients[u], inbox[u]), cfg) for u in range(1, 7)}
    req = m.UnmaskRequest(
        cfg.round, 0xFFFFFFFF, tuple(v for v in range(7) if v != 1), (), tuple(
            [(0, dict(tag_msg.tags)[1])] + [(u, dict(honest[u].tags)[1]) for u in range(2, 7)]
        ),
    )
    with pytest.raises(IntegrityError):
        reply(clients[1], req.to_bytes())


def test_tampered_ciphertext_detected_and_round_continues() -> None:
    cfg = cfg_for(n=8, k=6)
    x = inputs_for(cfg, seed=7)

    def flip(stage, site, direction, data):
        if stage == "share" and direction == "down" and site == 3:
            b = bytearray(data)
            b[-5] ^= 0x40  # inside the last ciphertext
            return bytes(b)
        return data

    out, trace = run_round(cfg, x.__getitem__, tamper=flip)
    assert ("site 3", "masked", "IntegrityError") in trace.errors
    assert 3 not in out.survivors
    assert np.array_equal(out.total, plain_sum(cfg, x, out.survivors))


def test_replayed_and_reattributed_ciphertexts_rejected() -> None:
    cfg1, cfg2 = cfg_for(rnd=1), cfg_for(rnd=2)
    x = inputs_for(cfg1, seed=7)
    _, _, inbox1 = run_until(cfg1, x, "masked")
    _, clients2, inbox2 = run_until(cfg2, x, "masked")
    with pytest.raises(IntegrityError, match="replayed"):
        reply(clients2[0], inbox1[0])  # a relay from round 1 shown in round 2
    _, clients2, inbox2 = run_until(cfg2, x, "masked")
    relay = m.decode(inbox2[0], cfg2)
    (u, ct), (w, _) = relay.cts[0], relay.cts[1]
    swapped = dataclasses.replace(relay, cts=((u, relay.cts[1][1]), (w, ct), *relay.cts[2:]))
    with pytest.raises(IntegrityError):
        reply(clients2[0], swapped.to_bytes())


@pytest.mark.parametrize(
    "mangle",
    [lambda b: b[:-1], lambda b: b + b"\x00", lambda b: b[:5], lambda b: b"XX" + b[2:],
     lambda b: b[:2] + b"\x09" + b[3:], lambda b: b + bytes(10**6), lambda b: b""],
    ids=["truncated", "padded", "short-header", "magic", "version", "oversized", "empty"],
)
def test_malformed_site_message_refused_and_round_continues(mangle) -> None:
    cfg = cfg_for(n=8, k=6)
    x = inputs_for(cfg, seed=7)

    def tamper(stage, site, direction, data):
        return mangle(data) if (stage, site, direction) == ("masked", 5, "up") else data

    out, trace = run_round(cfg, x.__getitem__, tamper=tamper)
    assert trace.errors and trace.errors[0][0] == "server"
    assert trace.errors[0][2] in {"MalformedMessageError", "IntegrityError"}
    assert 5 not in out.survivors and len(out.survivors) == 7
    assert np.array_equal(out.total, plain_sum(cfg, x, out.survivors))


def test_server_refuses_out_of_stage_and_duplicate_messages() -> None:
    cfg = cfg_for()
    x = inputs_for(cfg, seed=7)
    server, clients, inbox = run_until(cfg, x, "masked")
    masked = reply(clients[0], inbox[0])
    server.receive(str(0), masked)
    with pytest.raises(ProtocolError, match="second message"):
        server.receive(str(0), masked)
    adv = m.AdvertiseKeys(cfg.round, 1, bytes(32), bytes(32)).to_bytes()
    with pytest.raises(ProtocolError, match="server in state COLLECT_MASKED cannot handle"):
        server.receive(str(1), adv)
    with pytest.raises(ProtocolError, match="another sender"):
        server.receive(str(2), masked)
    assert server.state is State.COLLECT_MASKED  # peer errors do not break the server


def test_client_missing_transition_names_role_state_event() -> None:
    cfg = cfg_for()
    x = inputs_for(cfg, seed=7)
    _, clients, inbox = run_until(cfg, x, "masked")
    bogus = m.SurvivorList(cfg.round, 0xFFFFFFFF, tuple(range(7))).to_bytes()
    with pytest.raises(ProtocolError, match="client in state SHARED cannot handle SurvivorList"):
        reply(clients[0], bogus)
    assert clients[0].state is State.ERROR
    assert all(isinstance(k[2], str) and v[0].startswith("_") for k, v in TRANSITIONS.items())


@pytest.mark.parametrize("cls", [m.KeyBroadcast, m.ShareRelay, m.SurvivorList, m.UnmaskRequest])
def test_oversized_lists_and_duplicates_rejected(cls) -> None:
    cfg = cfg_for(n=4, k=3)
    hdr = m.SurvivorList(cfg.round, 1, ()).header()
    huge = hdr[:3] + bytes([cls.TYPE]) + hdr[4:] + (10**6).to_bytes(4, "little")
    with pytest.raises(MalformedMessageError):
        m.decode(huge, cfg)
    dup = m.SurvivorList(cfg.round, 1, (1, 1)).to_bytes()
    with pytest.raises(MalformedMessageError, match="increasing"):
        m.decode(dup, cfg)
    with pytest.raises(PeerError):
        m.decode(b"\x00" * 3, cfg)
