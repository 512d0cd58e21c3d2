"""A generic sans-IO party machine driven by one transition table per protocol (h11-style).

Every role of every protocol (SecAgg+ site and server, each MPC party) is a
:class:`Machine` with the same interface, the one the transports drive
(:class:`veil.transport.driver.Party`):

* ``start()`` — begin (queue the first messages, if any);
* ``receive(sender, data)`` — bytes in from a named party (the transport authenticates
  names: in-process by construction, over TCP by mutual TLS);
* ``on_deadline()`` — the transport's clock says the current stage is over;
* ``outbox()`` — the ``(receiver, bytes)`` pairs queued since the last call;
* ``result``, ``state``, ``stage``, ``done``, ``expects_deadline``, ``waiting_for``.

The protocol is one :class:`TransitionTable`: ``(role, state, event) → (handler, next
state)`` plus the stage name of each state. The stage order of each role is *derived* from
the table (:meth:`TransitionTable.stages`), never written again elsewhere.

Errors say whose fault they are. An event missing from the table raises
:class:`~veil.errors.LocalError` when the local program called the machine out of order
(``start``/``on_deadline`` at the wrong time) and :class:`~veil.errors.ProtocolError` (a
:class:`~veil.errors.PeerError` naming the sender) when a peer's message is not allowed in
this state; either message names protocol, role, state and event. Any exception moves the
machine to ``ERROR`` — except, in roles the table marks as *isolating* (a server facing many
peers), a :class:`~veil.errors.PeerError` raised while handling one peer's message: that
message is refused, the state is unchanged (handlers validate before they mutate), and the
peer is simply silent for the stage, so one bad peer cannot abort the round for all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from veil.errors import LocalError, PeerError, ProtocolError

__all__ = ["TransitionTable", "Machine", "START", "DEADLINE", "DONE", "ERROR"]

START = "Start"  #: event of ``start()``
DEADLINE = "Deadline"  #: event of ``on_deadline()``
DONE = "DONE"  #: final state name of every role
ERROR = "ERROR"  #: failure state name of every role


def _name(x: object) -> str:
    """The plain name of a state or role (the value of a str Enum member)."""
    return str(getattr(x, "value", x))


@dataclass(frozen=True)
class TransitionTable:
    """All transitions of one protocol, for all its roles.

    Attributes:
        protocol: protocol name (in error messages).
        entries: ``(role, state, event) → (handler method name, next state)``; events are
            message type names, ``"Start"`` or ``"Deadline"``.
        initial: role → initial state.
        stage_of: state → name of the protocol stage a party in that state is in.
        isolating: roles whose peer-caused errors refuse the message but keep the state.

    Raises:
        LocalError: if a role's states do not form one path from its initial state to
            ``DONE`` (the stage order would be ambiguous).
    """

    protocol: str
    entries: Mapping[tuple[Any, Any, str], tuple[str, Any]] = field(repr=False)
    initial: Mapping[Any, Any]
    stage_of: Mapping[Any, str] = field(repr=False)
    isolating: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for role in self.initial:
            self.stages(role)

    def path(self, role: str) -> tuple[str, ...]:
        """The states of ``role`` in order, from its initial state to ``DONE``.

        Raises:
            LocalError: if a state has two different successors or the path loops.
        """
        state, seen = self.initial[role], []
        while state != DONE:
            if state in seen:
                raise LocalError(
                    f"{self.protocol} table: {_name(role)} states loop at {_name(state)}"
                )
            seen.append(state)
            nxt = {n for (r, s, _), (_, n) in self.entries.items() if r == role and s == state}
            nxt.discard(state)
            if len(nxt) != 1:
                raise LocalError(
                    f"{self.protocol} table: {_name(role)} in state {_name(state)} needs "
                    f"exactly one next state, has {sorted(map(_name, nxt))}"
                )
            state = nxt.pop()
        return (*seen, DONE)

    def stages(self, role: str) -> tuple[str, ...]:
        """Stage names of ``role`` in protocol order (derived from the table)."""
        out: list[str] = []
        for state in self.path(role)[:-1]:
            name = self.stage_of[state]
            if name not in out:
                out.append(name)
        return tuple(out)

    def expects(self, role: str, state: str, event: str) -> bool:
        """Whether ``event`` has an entry for ``role`` in ``state``."""
        return (role, state, event) in self.entries


class Machine:
    """Base of every protocol party: table dispatch, the outbox and the ERROR rule.

    Subclasses set :attr:`table` and :attr:`role`, call ``super().__init__(party_id)`` and
    implement the handlers the table names; handlers queue messages with :meth:`_send`.
    """

    table: ClassVar[TransitionTable]
    role: ClassVar[str]
    state: str
    result: Any = None

    def __init__(self, party_id: str) -> None:
        self._party_id = str(party_id)
        self.state = self.table.initial[self.role]
        self._out: list[tuple[str, bytes]] = []

    # ---- the party interface -------------------------------------------------------
    @property
    def party_id(self) -> str:
        """This party's name on the network."""
        return self._party_id

    @property
    def stage(self) -> str:
        """Name of the stage this party is in (``"done"`` / ``"error"`` at the end)."""
        return self.table.stage_of.get(self.state, _name(self.state).lower())

    @property
    def done(self) -> bool:
        """Whether the machine reached ``DONE`` or ``ERROR`` (it takes no more events)."""
        return self.state in (DONE, ERROR)

    @property
    def expects_deadline(self) -> bool:
        """Whether this party's current state closes on the transport's deadline."""
        return self.table.expects(self.role, self.state, DEADLINE)

    @property
    def waiting_for(self) -> frozenset[str]:
        """Parties whose message this stage still awaits (a transport may close the stage
        early once it is empty). Default: nobody is known to be awaited."""
        return frozenset()

    def start(self) -> None:
        """Begin the protocol (queues the first messages, if this role sends first).

        Raises:
            LocalError: if already started.
        """
        self._dispatch(START)

    def on_deadline(self) -> None:
        """The current stage's deadline passed.

        Raises:
            LocalError: if this state has no deadline.
            AbortError: the protocol cannot go on (the machine is in ``ERROR``).
        """
        self._dispatch(DEADLINE)

    def receive(self, sender: str, data: bytes) -> None:  # pragma: no cover - abstract
        """Handle one message from ``sender`` (subclasses decode and call :meth:`_dispatch`)."""
        raise NotImplementedError

    def outbox(self) -> list[tuple[str, bytes]]:
        """The messages queued since the last call, as ``(receiver, bytes)``; empties it."""
        out, self._out = self._out, []
        return out

    # ---- for subclasses ------------------------------------------------------------
    def _send(self, to: str, data: bytes) -> None:
        self._out.append((to, data))

    def _fail(self) -> None:
        # same type as the table's states (a str Enum's member, or a plain str)
        self.state = type(self.table.initial[self.role])(ERROR)

    def _dispatch(self, event: str, *args: Any, sender: str | None = None) -> None:
        """Run the handler of ``event`` (``sender`` None: a local call) and move on.

        Raises:
            LocalError: a local call the table does not allow here.
            ProtocolError: a peer's message the table does not allow here.
            Whatever the handler raises (the machine is then in ``ERROR``, unless the role
            isolates a peer's error).
        """
        entry = self.table.entries.get((self.role, self.state, event))
        try:
            if entry is None:
                what = (
                    f"{self.table.protocol}: {_name(self.role)} in state {_name(self.state)} "
                    f"cannot handle {event}"
                )
                if sender is None:
                    raise LocalError(what + " (local misuse: called out of order)")
                raise ProtocolError(what + " (the peer's message is out of order)", peer=sender)
            handler, nxt = entry
            getattr(self, handler)(*args)
        except PeerError:
            if sender is None or self.role not in self.table.isolating:
                self._fail()
            raise
        except BaseException:
            self._fail()
            raise
        self.state = nxt
