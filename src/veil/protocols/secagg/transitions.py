"""The one transition table of SecAgg+ (both roles).

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
dropped at that stage). :data:`STAGES` — the stage order used in dropout schedules,
deadlines and AbortError messages — is derived from :data:`TABLE`. The generic rules
(missing entries, whose fault, ``ERROR``) are those of :class:`veil.protocols.machine.Machine`;
the server isolates errors caused by one site's message.
"""

from __future__ import annotations

from enum import Enum

from veil.protocols.machine import DEADLINE, START, TransitionTable

__all__ = ["Role", "State", "TABLE", "TRANSITIONS", "STAGES"]


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


C, S = Role.CLIENT, Role.SERVER

#: (role, state, event) → (handler method, next state)
TRANSITIONS: dict[tuple[Role, State, str], tuple[str, State]] = {
    (C, State.INIT, START): ("_on_start", State.ADVERTISED),
    (C, State.ADVERTISED, "KeyBroadcast"): ("_on_keys", State.SHARED),
    (C, State.SHARED, "ShareRelay"): ("_on_relay", State.MASKED),
    (C, State.MASKED, "SurvivorList"): ("_on_survivors", State.CHECKED),
    (C, State.CHECKED, "UnmaskRequest"): ("_on_unmask", State.DONE),
    (S, State.COLLECT_KEYS, START): ("_on_start", State.COLLECT_KEYS),
    (S, State.COLLECT_KEYS, "AdvertiseKeys"): ("_on_advertise", State.COLLECT_KEYS),
    (S, State.COLLECT_KEYS, DEADLINE): ("_close_keys", State.COLLECT_SHARES),
    (S, State.COLLECT_SHARES, "ShareKeys"): ("_on_shares", State.COLLECT_SHARES),
    (S, State.COLLECT_SHARES, DEADLINE): ("_close_shares", State.COLLECT_MASKED),
    (S, State.COLLECT_MASKED, "MaskedInput"): ("_on_masked", State.COLLECT_MASKED),
    (S, State.COLLECT_MASKED, DEADLINE): ("_close_masked", State.COLLECT_CHECKS),
    (S, State.COLLECT_CHECKS, "ConsistencyAck"): ("_on_ack", State.COLLECT_CHECKS),
    (S, State.COLLECT_CHECKS, DEADLINE): ("_close_checks", State.COLLECT_UNMASK),
    (S, State.COLLECT_UNMASK, "UnmaskResponse"): ("_on_unmask_response", State.COLLECT_UNMASK),
    (S, State.COLLECT_UNMASK, DEADLINE): ("_close_unmask", State.DONE),
}

#: the table of both roles, with the stage each state belongs to
TABLE = TransitionTable(
    protocol="secagg+",
    entries=TRANSITIONS,
    initial={C: State.INIT, S: State.COLLECT_KEYS},
    stage_of={
        State.INIT: "advertise", State.COLLECT_KEYS: "advertise",
        State.ADVERTISED: "share", State.COLLECT_SHARES: "share",
        State.SHARED: "masked", State.COLLECT_MASKED: "masked",
        State.MASKED: "consistency", State.COLLECT_CHECKS: "consistency",
        State.CHECKED: "unmask", State.COLLECT_UNMASK: "unmask",
    },
    isolating=frozenset({S}),
)

#: Stage names in protocol order, derived from the table (the server's collection stages).
STAGES: tuple[str, ...] = TABLE.stages(S)
