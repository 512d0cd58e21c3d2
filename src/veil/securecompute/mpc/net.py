"""A compute party's link to its peers: one framed message per peer per round, counted.

Every message carries a 4-byte header, its round number on that link (the transport
frames messages, so the length is known and checked against the expected shapes). A message from the wrong round or of the wrong size is a :class:`ProtocolError` /
:class:`MalformedMessageError` naming the peer; a silent or vanished peer becomes an
:class:`~veil.errors.AbortError` after ``deadline_s`` seconds, naming the peer and the
operation — never a hang. Rounds and bytes sent are counted per operation label.
"""

from __future__ import annotations

import struct
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from veil.errors import AbortError, MalformedMessageError, PeerError, ProtocolError
from veil.transport.channel import Channel

__all__ = ["PartyNet", "OpStats", "PARTY_NAMES", "CLIENT"]

PARTY_NAMES = ("p0", "p1", "p2")
CLIENT = "client"
_HEADER = struct.Struct("<I")


@dataclass
class OpStats:
    """Rounds and bytes sent by one party, per operation label."""

    rounds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def total_rounds(self) -> int:
        return sum(self.rounds.values())

    def total_bytes(self) -> int:
        return sum(self.bytes_sent.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"rounds": dict(self.rounds), "bytes": dict(self.bytes_sent)}


class PartyNet:
    """Framed, counted exchanges over a :class:`~veil.transport.channel.Channel`.

    Args:
        channel: this party's channel; its ``party_id`` is one of ``names``.
        names: the compute parties' channel names, index = party number.
        deadline_s: how long to wait for any one message before aborting.
    """

    def __init__(
        self, channel: Channel, names: tuple[str, ...] = PARTY_NAMES, deadline_s: float = 30.0
    ) -> None:
        self.channel = channel
        self.names = names
        self.index = names.index(channel.party_id) if channel.party_id in names else -1
        self.deadline_s = float(deadline_s)
        self.stats = OpStats()
        self.op = "setup"
        self._round = 0
        self._peer_round: dict[str, int] = defaultdict(int)

    def __repr__(self) -> str:
        return f"PartyNet({self.channel.party_id!r}, round={self._round})"

    def send_to(self, peer: str, arrays: list[np.ndarray]) -> None:
        payload = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
        frame = _HEADER.pack(self._peer_round[peer]) + payload
        self._peer_round[peer] += 1
        try:
            self.channel.send(peer, frame)
        except PeerError as e:
            raise AbortError(f"{self.op}: cannot send to {peer}: {e}") from None
        self.stats.bytes_sent[self.op] += len(frame)

    def recv_from(self, peer: str, specs: list[tuple[tuple[int, ...], np.dtype]]) -> list[np.ndarray]:
        """Receive one frame from ``peer`` holding arrays of the given shapes/dtypes."""
        t_end = time.monotonic() + self.deadline_s
        try:
            frame = self.channel.recv(peer, timeout=max(0.0, t_end - time.monotonic()))
        except PeerError as e:
            raise AbortError(
                f"{self.op}: party {peer} did not answer within {self.deadline_s:g} s or its "
                f"connection broke ({type(e).__name__}); no result is released"
            ) from None
        if len(frame) < _HEADER.size:
            raise MalformedMessageError("truncated frame", peer=peer)
        (rnd,) = _HEADER.unpack_from(frame)
        n = len(frame) - _HEADER.size
        want_rnd = self._recv_round(peer)
        if rnd != want_rnd:
            raise ProtocolError(f"{self.op}: message of round {rnd}, expected {want_rnd}", peer=peer)
        sizes = [int(np.prod(s)) * np.dtype(d).itemsize for s, d in specs]
        if n != sum(sizes):
            raise MalformedMessageError(
                f"{self.op}: payload of {len(frame) - _HEADER.size} bytes, expected {sum(sizes)}",
                peer=peer,
            )
        out, off = [], _HEADER.size
        for (shape, dt), size in zip(specs, sizes):
            out.append(np.frombuffer(frame, dtype=dt, count=size // np.dtype(dt).itemsize,
                                     offset=off).reshape(shape))
            off += size
        return out

    def _recv_round(self, peer: str) -> int:
        key = "<" + peer
        r = self._peer_round[key]
        self._peer_round[key] = r + 1
        return r

    def exchange(
        self,
        sends: Mapping[int, list[np.ndarray]],
        recvs: Mapping[int, list[tuple[tuple[int, ...], np.dtype]]],
    ) -> dict[int, list[np.ndarray]]:
        """One communication round: send to some peers, then receive from some peers
        (party indices). Counts one round for the current operation."""
        for j, arrays in sends.items():
            self.send_to(self.names[j], arrays)
        got = {j: self.recv_from(self.names[j], specs) for j, specs in recvs.items()}
        self.stats.rounds[self.op] += 1
        self._round += 1
        return got
