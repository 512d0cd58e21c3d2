"""The one transition table of SecAgg+ (both roles) and the state-machine base.

Protocol steps (Bonawitz et al. 2017; sparse graph of Bell et al. 2020):

=====  ===================  ==================================  ===========================
step   client state          event                               server state
=====  ===================  ==================================  ===========================
1      INIT → ADVERTISED     Start → AdvertiseKeys                COLLECT_KEYS
2      ADVERTISED → SHARED   KeyBroadcast → ShareKeys             COLLECT_SHARES
3      SHARED → MASKED       ShareRelay → MaskedInput             COLLECT_MASKED
4      MASKED → CHECKED      SurvivorList → ConsistencyAck        COLLECT_CHECKS
5      CHECKED → DONE        UnmaskRequest → UnmaskResponse       COLLECT_UNMASK → DONE
=====  ===================  ==================================  ===========================

The server closes each collection stage on a ``Deadline`` event (sites silent by then are
dropped at that stage). A (role, state, event) triple missing from :data:`TRANSITIONS`
raises :class:`~veil.errors.ProtocolError` naming all three. Any exception moves a client
to ``ERROR``; the server isolates errors caused by one peer's message (that message is
refused, the peer counts as silent) and moves to ``ERROR`` on anything else.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from veil.errors import PeerError, ProtocolError

__all__ = ["Role", "State", "TRANSITIONS", "STAGES", "Machine"]


class Role(str, Enum):
    """Who runs the machine."""

    CLIENT = "client"
    SERVER = "server"


class State(str, Enum):
    """States of both roles (client states first)."""

    INIT = "INIT"
    ADVERTISED = "ADVERTISED"
    SHARED = "SHARED"
    MASKED = "MASKED"
    CHECKED = "CHECKED"
    COLLECT_KEYS = "COLLECT_KEYS"
    COLLECT_SHARES = "COLLECT_SHARES"
    COLLECT_MASKED = "COLLECT_MASKED"
    COLLECT_CHECKS = "COLLECT_CHECKS"
    COLLECT_UNMASK = "COLLECT_UNMASK"
    DONE = "DONE"
    ERROR = "ERROR"


#: Stage names used in dropout schedules, deadlines and AbortError messages.
STAGES = ("advertise", "share", "masked", "consistency", "unmask")

C, S = Role.CLIENT, Role.SERVER

#: (role, state, event) → (handler method, next state)
TRANSITIONS: dict[tuple[Role, State, str], tuple[str, State]] = {
    (C, State.INIT, "Start"): ("_on_start", State.ADVERTISED),
    (C, State.ADVERTISED, "KeyBroadcast"): ("_on_keys", State.SHARED),
    (C, State.SHARED, "ShareRelay"): ("_on_relay", State.MASKED),
    (C, State.MASKED, "SurvivorList"): ("_on_survivors", State.CHECKED),
    (C, State.CHECKED, "UnmaskRequest"): ("_on_unmask", State.DONE),
    (S, State.COLLECT_KEYS, "AdvertiseKeys"): ("_on_advertise", State.COLLECT_KEYS),
    (S, State.COLLECT_KEYS, "Deadline"): ("_close_keys", State.COLLECT_SHARES),
    (S, State.COLLECT_SHARES, "ShareKeys"): ("_on_shares", State.COLLECT_SHARES),
    (S, State.COLLECT_SHARES, "Deadline"): ("_close_shares", State.COLLECT_MASKED),
    (S, State.COLLECT_MASKED, "MaskedInput"): ("_on_masked", State.COLLECT_MASKED),
    (S, State.COLLECT_MASKED, "Deadline"): ("_close_masked", State.COLLECT_CHECKS),
    (S, State.COLLECT_CHECKS, "ConsistencyAck"): ("_on_ack", State.COLLECT_CHECKS),
    (S, State.COLLECT_CHECKS, "Deadline"): ("_close_checks", State.COLLECT_UNMASK),
    (S, State.COLLECT_UNMASK, "UnmaskResponse"): ("_on_unmask_response", State.COLLECT_UNMASK),
    (S, State.COLLECT_UNMASK, "Deadline"): ("_close_unmask", State.DONE),
}


class Machine:
    """Table-driven dispatch shared by client and server."""

    role: Role
    state: State

    def _dispatch(self, event: str, *args: Any, peer_errors_are_local: bool = True) -> Any:
        entry = TRANSITIONS.get((self.role, self.state, event))
        try:
            if entry is None:
                raise ProtocolError(
                    f"{self.role.value} in state {self.state.value} cannot handle {event}"
                )
            handler, nxt = entry
            out = getattr(self, handler)(*args)
        except PeerError:
            if peer_errors_are_local:
                self.state = State.ERROR
            raise
        except BaseException:
            self.state = State.ERROR
            raise
        self.state = nxt
        return out
