"""In-memory channels: order per pair, timeouts naming the peer, closed links, misuse."""

from __future__ import annotations

import threading
import time

import pytest

from veil.errors import LocalError, PeerError, PeerTimeoutError
from veil.transport import Channel, InProcessNetwork


def test_messages_arrive_in_order_per_pair_and_by_arrival_for_any() -> None:
    net = InProcessNetwork(["a", "b", "c"])
    assert all(isinstance(ch, Channel) and ch.party_id == p for p, ch in net.items())
    net["a"].send("c", b"a1")
    net["b"].send("c", b"b1")
    net["a"].send("c", b"a2")
    assert net["c"].recv("a", 0.1) == b"a1"
    assert net["c"].recv_any(0.1) == ("b", b"b1")
    assert net["c"].recv_any(0.1) == ("a", b"a2")


def test_timeout_names_the_silent_peer_and_is_bounded() -> None:
    net = InProcessNetwork(["a", "b"])
    t0 = time.monotonic()
    with pytest.raises(PeerTimeoutError) as err:
        net["a"].recv("b", timeout=0.05)
    assert err.value.peer == "b" and isinstance(err.value, PeerError)
    assert 0.04 < time.monotonic() - t0 < 2.0


def test_receive_from_another_thread() -> None:
    net = InProcessNetwork(["a", "b"])
    threading.Timer(0.02, lambda: net["b"].send("a", b"late")).start()
    assert net["a"].recv("b", timeout=5) == b"late"


def test_closed_peer_is_a_peer_error_after_its_queued_messages() -> None:
    net = InProcessNetwork(["a", "b"])
    net["b"].send("a", b"last")
    net["b"].close()
    assert net["a"].recv("b", 0.1) == b"last"
    with pytest.raises(PeerError, match="closed") as err:
        net["a"].recv("b", 0.1)
    assert err.value.peer == "b"
    with pytest.raises(PeerError):
        net["a"].send("b", b"x")
    with pytest.raises(LocalError):
        net["b"].send("a", b"x")  # b closed its own endpoint: local misuse


def test_misuse_is_a_local_error() -> None:
    net = InProcessNetwork(["a", "b"])
    with pytest.raises(LocalError):
        net["a"].send("zz", b"x")
    with pytest.raises(LocalError):
        net["a"].send("b", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(LocalError):
        InProcessNetwork(["a", "a"])
