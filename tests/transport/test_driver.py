"""The in-process driver and the generic Machine: derived stage order, whose-fault errors,
ERROR on any exception, deadlines that fire when a party is silent or a handler blocks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from veil.aggregation.secagg import run_round
from veil.errors import ConfigError, LocalError, ProtocolError
from veil.protocols.machine import DEADLINE, START, Machine, TransitionTable
from veil.protocols.secagg import STAGES, TABLE, SecAggClient, SecAggConfig, SecAggServer
from veil.protocols.secagg.transitions import Role
from veil.transport.driver import Party, drive

# ---- a toy two-stage protocol: the hub collects pings, then answers everyone ----------
PING = TransitionTable(
    protocol="ping",
    entries={
        ("leaf", "IDLE", START): ("_on_start", "SENT"),
        ("leaf", "SENT", "pong"): ("_on_pong", "DONE"),
        ("hub", "COLLECT", START): ("_noop", "COLLECT"),
        ("hub", "COLLECT", "ping"): ("_on_ping", "COLLECT"),
        ("hub", "COLLECT", DEADLINE): ("_close", "DONE"),
    },
    initial={"leaf": "IDLE", "hub": "COLLECT"},
    stage_of={"IDLE": "ping", "SENT": "pong", "COLLECT": "ping"},
    isolating=frozenset({"hub"}),
)


class Leaf(Machine):
    table, role = PING, "leaf"

    def receive(self, sender: str, data: bytes) -> None:
        self._dispatch(data.decode(), sender=sender)

    def _on_start(self) -> None:
        self._send("hub", b"ping")

    def _on_pong(self) -> None:
        self.result = "ponged"


class Hub(Machine):
    table, role = PING, "hub"

    def __init__(self) -> None:
        super().__init__("hub")
        self.seen: list[str] = []

    def receive(self, sender: str, data: bytes) -> None:
        self._dispatch(data.decode(), sender, sender=sender)

    def _noop(self) -> None:
        pass

    def _on_ping(self, sender: str) -> None:
        if sender == "evil":
            raise ProtocolError("refused", peer=sender)
        self.seen.append(sender)

    def _close(self) -> None:
        for s in sorted(self.seen):
            self._send(s, b"pong")
        self.result = sorted(self.seen)


def test_stage_order_is_derived_from_the_table() -> None:
    assert PING.stages("leaf") == ("ping", "pong") and PING.stages("hub") == ("ping",)
    assert STAGES == TABLE.stages(Role.CLIENT) == TABLE.stages(Role.SERVER)
    with pytest.raises(LocalError, match="exactly one next state"):
        TransitionTable("bad", {("r", "A", "x"): ("_h", "B"), ("r", "A", "y"): ("_h", "C")},
                        {"r": "A"}, {"A": "a"})


def test_missing_entries_name_role_state_event_and_whose_fault() -> None:
    leaf = Leaf("a")
    with pytest.raises(ProtocolError, match=r"ping: leaf in state IDLE cannot handle pong") as e:
        leaf.receive("hub", b"pong")
    assert e.value.peer == "hub" and leaf.state == "ERROR"  # any exception → ERROR
    leaf2 = Leaf("b")
    leaf2.start()
    with pytest.raises(LocalError, match="leaf in state SENT cannot handle Start.*local"):
        leaf2.start()
    assert leaf2.state == "ERROR"
    hub = Hub()
    with pytest.raises(ProtocolError):
        hub.receive("evil", b"ping")
    assert hub.state == "COLLECT"  # the hub isolates one peer's bad message


def test_drive_runs_any_protocol_and_drops_on_schedule() -> None:
    leaves = [Leaf(n) for n in "abcd"]
    hub = Hub()
    assert all(isinstance(p, Party) for p in [hub, *leaves])
    trace = drive([hub, *leaves], drops={"c": "ping", "d": "pong"}, stages=("ping", "pong"))
    assert hub.result == ["a", "b", "d"]
    assert [p.result for p in leaves] == ["ponged", "ponged", None, None]
    assert trace.dropped == {"c": "ping", "d": "pong"} and trace.stages == ["ping"]
    with pytest.raises(ConfigError, match="unknown dropout stages"):
        drive([Hub()], drops={"a": "nope"}, stages=("ping", "pong"))


class Blocking(SecAggClient):
    """A site whose stage-3 handler never returns (until the test releases it)."""

    release = threading.Event()

    def _on_relay(self, msg) -> None:  # type: ignore[override]
        self.release.wait(60)
        super()._on_relay(msg)


def test_a_blocking_handler_ends_the_stage_at_its_deadline() -> None:
    cfg = SecAggConfig(0, tuple(range(6)), 8, 16, 5, 3, bytes(32))
    x = {u: np.full(8, u + 1, dtype=np.uint64) for u in cfg.site_ids}
    server = SecAggServer(cfg)
    sites = [(Blocking if u == 2 else SecAggClient)(cfg, u, x[u]) for u in cfg.site_ids]
    t0 = time.monotonic()
    trace = drive([server, *sites], stage_deadline_s=0.5)
    elapsed = time.monotonic() - t0
    Blocking.release.set()
    assert elapsed < 10  # bounded: one deadline, not the 60 s the handler would take
    assert trace.late == {"2": "masked"} and trace.dropped == {"2": "masked"}
    assert server.result is not None and 2 not in server.result.survivors
    assert np.array_equal(server.result.total, np.full(8, 1 + 2 + 4 + 5 + 6, dtype=np.uint64))


def test_a_site_that_never_answers_does_not_hold_the_round() -> None:
    cfg = SecAggConfig(0, tuple(range(5)), 4, 16, 4, 3, bytes(32))
    x = {u: np.full(4, 10 * u, dtype=np.uint64) for u in cfg.site_ids}

    def swallow(stage, site, direction, data):  # site 4's replies from stage 2 on vanish
        return None if site == 4 and direction == "up" and stage != "advertise" else data

    t0 = time.monotonic()
    out, trace = run_round(cfg, x.__getitem__, tamper=swallow, stage_deadline_s=1.0)
    assert time.monotonic() - t0 < 10
    assert out.survivors == (0, 1, 2, 3)
    assert np.array_equal(out.total, np.full(4, 60, dtype=np.uint64))
