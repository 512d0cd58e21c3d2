"""One party's loop over a :class:`~veil.transport.channel.Channel` (one per OS process).

:func:`run_party` is what a deployed site or server runs: it starts the party, sends what
it queues, and feeds it what arrives. A party whose state closes on a deadline (a server)
owns the clock: each stage lasts until every awaited peer answered
(``party.waiting_for`` is empty) or ``stage_deadline_s`` of wall-clock time passed, then
``on_deadline()`` fires — a peer that never answers cannot hold the stage open. Any other
party waits at most ``idle_timeout_s`` for its next message.

**Side channels** (``side_channels``, :class:`~veil.transport.sidechannels.SideChannels`).
With ``fixed_deadlines`` a clock-owning party never acts on an arrival: the loop holds
every message of the stage, waits out the full ``stage_deadline_s`` (even once nobody is
awaited), hands the held messages to the party in canonical-then-CSPRNG-shuffled order and
fires ``on_deadline``; a message that arrives after the deadline is handed over in the next
stage (where the protocol refuses it as out of order: that peer missed the stage). With
``site_delay_s`` any other party waits a random CSPRNG delay before it sends what a
message made it queue.

A :class:`~veil.errors.VeilError` from handling one message is recorded and the loop goes
on (the party decides whether it is still usable: a server refuses the message, a site
moves to ``ERROR`` and the loop ends).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from veil.errors import PeerError, PeerTimeoutError, VeilError
from veil.transport.channel import Channel
from veil.transport.driver import Party
from veil.transport.sidechannels import OFF, SideChannels

__all__ = ["run_party", "LoopTrace"]


@dataclass
class LoopTrace:
    """What one party's loop saw.

    Attributes:
        stages: ``(stage, seconds)`` for each stage the party closed on a deadline.
        errors: ``(sender, stage, error type)`` of messages the party refused.
        bytes_sent / bytes_received: totals.
    """

    stages: list[tuple[str, float]] = field(default_factory=list)
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0


def _flush(party: Party, channel: Channel, trace: LoopTrace, delay_s: float = 0.0) -> None:
    out = party.outbox()
    if out and delay_s > 0:
        time.sleep(delay_s)
    for to, data in out:
        trace.bytes_sent += len(data)
        try:
            channel.send(to, data)
        except PeerError as exc:  # a gone peer is silent; the protocol handles dropouts
            trace.errors.append((to, party.stage, type(exc).__name__))


def _deliver(party: Party, sender: str, data: bytes, trace: LoopTrace) -> None:
    trace.bytes_received += len(data)
    stage = party.stage
    try:
        party.receive(sender, data)
    except VeilError as exc:
        trace.errors.append((sender, stage, type(exc).__name__))


def run_party(
    party: Party,
    channel: Channel,
    stage_deadline_s: float = 30.0,
    idle_timeout_s: float = 120.0,
    side_channels: SideChannels = OFF,
) -> LoopTrace:
    """Run ``party`` to completion over ``channel``.

    Args:
        party: the protocol party (its ``party_id`` is the channel's).
        channel: its endpoint.
        stage_deadline_s: wall-clock length of a stage for a clock-owning party.
        idle_timeout_s: longest any other party waits for its next message.
        side_channels: fixed deadlines with shuffled delivery (for a clock-owning party),
            random send delays (for the others); default: off.

    Returns:
        The loop's trace; read ``party.result``.

    Raises:
        PeerTimeoutError: a non-clock party heard nothing for ``idle_timeout_s``.
        VeilError: whatever ``on_deadline`` raised (e.g. AbortError: no result).
    """
    trace = LoopTrace()
    policy = side_channels
    party.start()
    _flush(party, channel, trace, 0.0 if party.expects_deadline else policy.delay())
    while not party.done:
        if party.expects_deadline:
            stage, t0 = party.stage, time.monotonic()
            if policy.fixed_deadlines:
                _fixed_stage(party, channel, trace, t0 + stage_deadline_s, policy)
            else:
                _open_stage(party, channel, trace, t0 + stage_deadline_s)
            party.on_deadline()
            trace.stages.append((stage, time.monotonic() - t0))
            _flush(party, channel, trace)
        else:
            sender, data = channel.recv_any(timeout=idle_timeout_s)
            _deliver(party, sender, data, trace)
            _flush(party, channel, trace, policy.delay())
    return trace


def _open_stage(party: Party, channel: Channel, trace: LoopTrace, end: float) -> None:
    """Deliver each message as it arrives; stop once nobody is awaited or at ``end``."""
    while party.waiting_for and (left := end - time.monotonic()) > 0:
        try:
            sender, data = channel.recv_any(timeout=left)
        except PeerTimeoutError:
            break
        _deliver(party, sender, data, trace)
        _flush(party, channel, trace)


def _fixed_stage(
    party: Party, channel: Channel, trace: LoopTrace, end: float, policy: SideChannels
) -> None:
    """Hold every message until ``end``, then deliver them in the policy's order."""
    held: list[tuple[str, bytes]] = []
    while (left := end - time.monotonic()) > 0:
        try:
            held.append(channel.recv_any(timeout=left))
        except PeerTimeoutError:
            break
    for sender, data in policy.order(held):
        _deliver(party, sender, data, trace)
    _flush(party, channel, trace)
