"""One party's view of a network: the :class:`Channel` protocol and an in-memory network.

A :class:`Channel` moves opaque byte strings between named parties. It preserves order per
(sender, receiver) pair, never merges or splits messages, and says who is at fault when
something goes wrong:

* :class:`~veil.errors.PeerTimeoutError` (a :class:`~veil.errors.PeerError`) when nothing
  arrived from a peer before the timeout — it names the peer;
* :class:`~veil.errors.PeerError` when the connection to a peer is closed or broken;
* :class:`~veil.errors.LocalError` when this party misuses its own channel (unknown party
  name, use after :meth:`Channel.close`, a payload that is not bytes).

Implementations: :class:`InProcessNetwork` (threads in one process) and
:func:`veil.transport.tcp.connect_mesh` (TCP + mutual TLS between OS processes).

Example:
    >>> net = InProcessNetwork(["a", "b"])
    >>> net["a"].send("b", b"hi")
    >>> net["b"].recv("a", timeout=1.0)
    b'hi'
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from veil.errors import LocalError, PeerError, PeerTimeoutError

__all__ = ["Channel", "InProcessNetwork", "Mailbox", "check_payload"]


@runtime_checkable
class Channel(Protocol):
    """One party's endpoint: send to and receive from named peers."""

    @property
    def party_id(self) -> str:
        """This party's name."""
        ...

    def send(self, to: str, payload: bytes) -> None:
        """Queue ``payload`` for ``to`` (returns without waiting for the peer to read it).

        Raises:
            PeerError: the connection to ``to`` is closed or broken.
            LocalError: unknown peer, channel closed, or payload not bytes.
        """
        ...

    def recv(self, frm: str, timeout: float | None = None) -> bytes:
        """The next message from ``frm`` (blocks at most ``timeout`` seconds; None: forever).

        Raises:
            PeerTimeoutError: nothing from ``frm`` within ``timeout``.
            PeerError: the connection to ``frm`` is closed or broken and nothing is queued.
            LocalError: unknown peer or channel closed.
        """
        ...

    def recv_any(self, timeout: float | None = None) -> tuple[str, bytes]:
        """The oldest queued message from any peer, as ``(sender, payload)``.

        Raises:
            PeerTimeoutError: nothing arrived within ``timeout`` (``peer`` is ``"any"``).
            LocalError: channel closed.
        """
        ...

    def close(self) -> None:
        """Close this endpoint; peers see :class:`~veil.errors.PeerError` on their next
        receive from this party once its queued messages are read. Idempotent."""
        ...


class Mailbox:
    """Thread-safe queues of incoming messages, one per sender, with a global arrival order.

    Shared by every :class:`Channel` implementation: transports push what arrives with
    :meth:`put` (or :meth:`fail` when a link breaks) and the party reads it with
    :meth:`get` / :meth:`get_any`.

    Args:
        owner: name of the receiving party (for error messages).
        senders: the peers it may hear from.
    """

    def __init__(self, owner: str, senders: Iterable[str]) -> None:
        self.owner = owner
        self._cv = threading.Condition()
        self._queues: dict[str, deque[tuple[int, bytes]]] = {s: deque() for s in senders}
        self._broken: dict[str, str] = {}
        self._seq = itertools.count()
        self.closed = False

    def _check(self, peer: str) -> deque[tuple[int, bytes]]:
        if self.closed:
            raise LocalError(f"channel of {self.owner} is closed")
        q = self._queues.get(peer)
        if q is None:
            raise LocalError(f"{self.owner} has no channel to {peer!r}")
        return q

    def put(self, sender: str, payload: bytes) -> None:
        """Deliver one message from ``sender`` (transport side)."""
        with self._cv:
            if self.closed:
                return
            self._check(sender).append((next(self._seq), payload))
            self._cv.notify_all()

    def fail(self, sender: str, why: str) -> None:
        """Mark the link from ``sender`` broken; queued messages stay readable."""
        with self._cv:
            self._broken.setdefault(sender, why)
            self._cv.notify_all()

    def get(self, sender: str, timeout: float | None) -> bytes:
        """Next message from ``sender`` (see :meth:`Channel.recv`)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while True:
                q = self._check(sender)
                if q:
                    return q.popleft()[1]
                if sender in self._broken:
                    raise PeerError(self._broken[sender], peer=sender)
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise PeerTimeoutError(
                        f"no message to {self.owner} within {timeout:.3g} s", peer=sender
                    )
                self._cv.wait(left)

    def get_any(self, timeout: float | None) -> tuple[str, bytes]:
        """Oldest message from any sender (see :meth:`Channel.recv_any`)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while True:
                if self.closed:
                    raise LocalError(f"channel of {self.owner} is closed")
                heads = [(q[0][0], s) for s, q in self._queues.items() if q]
                if heads:
                    _, s = min(heads)
                    return s, self._queues[s].popleft()[1]
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise PeerTimeoutError(
                        f"no message to {self.owner} within {timeout:.3g} s", peer="any"
                    )
                self._cv.wait(left)

    def close(self) -> None:
        """Stop accepting messages and wake every waiting reader."""
        with self._cv:
            self.closed = True
            self._cv.notify_all()


def check_payload(payload: object) -> bytes:
    """``payload`` as ``bytes``.

    Raises:
        LocalError: if it is not bytes-like.
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise LocalError(f"a channel carries bytes, got {type(payload).__name__}")
    return bytes(payload)


class _InProcessChannel:
    """One endpoint of an :class:`InProcessNetwork` (thread-safe)."""

    def __init__(self, party_id: str, net: InProcessNetwork) -> None:
        self._id = party_id
        self._net = net

    @property
    def party_id(self) -> str:
        return self._id

    def __repr__(self) -> str:
        return f"InProcessChannel({self._id!r})"

    def send(self, to: str, payload: bytes) -> None:
        data = check_payload(payload)
        mine = self._net.mailboxes[self._id]
        if mine.closed:
            raise LocalError(f"channel of {self._id} is closed")
        if to == self._id or to not in self._net.mailboxes:
            raise LocalError(f"{self._id} has no channel to {to!r}")
        theirs = self._net.mailboxes[to]
        if theirs.closed:
            raise PeerError("connection closed", peer=to)
        theirs.put(self._id, data)

    def recv(self, frm: str, timeout: float | None = None) -> bytes:
        return self._net.mailboxes[self._id].get(frm, timeout)

    def recv_any(self, timeout: float | None = None) -> tuple[str, bytes]:
        return self._net.mailboxes[self._id].get_any(timeout)

    def close(self) -> None:
        mine = self._net.mailboxes[self._id]
        if mine.closed:
            return
        mine.close()
        for name, box in self._net.mailboxes.items():
            if name != self._id:
                box.fail(self._id, "connection closed")


class InProcessNetwork(dict[str, Channel]):
    """A full mesh of in-memory channels between ``party_ids`` (one dict entry per party).

    Args:
        party_ids: distinct party names.

    Raises:
        LocalError: if the names are not distinct non-empty strings.
    """

    def __init__(self, party_ids: Iterable[str]) -> None:
        ids = list(party_ids)
        if len(set(ids)) != len(ids) or not all(isinstance(i, str) and i for i in ids):
            raise LocalError("party ids must be distinct non-empty strings")
        self.mailboxes = {p: Mailbox(p, [q for q in ids if q != p]) for p in ids}
        super().__init__({p: _InProcessChannel(p, self) for p in ids})
