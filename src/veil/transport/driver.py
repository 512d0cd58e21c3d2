"""The in-process driver: the one loop that runs n sans-IO parties to completion.

Tests and the simulation use :func:`drive`; it knows no protocol. Parties follow the
:class:`Party` interface (:class:`veil.protocols.machine.Machine` implements it). The
loop, stage by stage:

1. deliver every queued message (``receive(sender, data)``), then the messages those
   handlers queued, until nothing is in flight;
2. fire the deadline (``on_deadline()``) on every party whose state closes on one (a
   server); what they queue opens the next stage;
3. stop when no party waits for a deadline any more.

**The driver owns the clock.** Every handler runs on a worker thread that the driver
watches: a call that has not returned within ``stage_deadline_s`` is abandoned, its party
is dropped at that stage (it is never called again; whatever it produces later is
discarded), and the round goes on. The simulation models parties running in parallel, so
the deadline applies to each party's handler time in a stage, not to the sum over the
parties that run one after another here. A party that never answers simply has nothing
in flight; its stage still closes. So a round always ends in bounded time.

**Side channels** (``side_channels``, :class:`~veil.transport.sidechannels.SideChannels`).
With ``fixed_deadlines`` the messages addressed to a clock-owning party are held, not
delivered, until the stage's deadline: step 2 first waits until ``stage_deadline_s`` has
passed since the stage opened (the previous deadline call returned) — even when every
message is in — then hands the held messages to the party in canonical-then-CSPRNG-shuffled
order, then fires the deadline. Parties here run one after another, so a stage lasts
``max(stage_deadline_s, the stage's total handler time)``: choose a deadline above it.
With ``site_delay_s`` every other party's handler is followed by a random CSPRNG delay
(counted in its handler time, hence against its deadline).

``drops`` is the n-party harness's dropout schedule: party → stage name at which it goes
silent (its messages of that stage and later are never delivered to it, so it never
answers). ``tamper`` lets a test alter or drop bytes in transit.

Errors: a :class:`~veil.errors.VeilError` raised by ``receive`` or ``start`` is recorded
in the trace (the party has refused the message or failed; it is silent from then on
unless it isolates peer errors). An error raised by ``on_deadline`` ends the drive and
propagates (for SecAgg+, an :class:`~veil.errors.AbortError`: no partial result). Any other
exception is a bug and propagates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from veil.errors import AbortError, ConfigError, VeilError
from veil.transport.sidechannels import OFF, SideChannels

__all__ = ["Party", "DriveTrace", "Tamper", "drive", "DEFAULT_STAGE_DEADLINE_S"]

#: stage deadline when none is given (seconds per party handler call)
DEFAULT_STAGE_DEADLINE_S = 60.0

#: tamper(stage, sender, receiver, data) → bytes to deliver, or None to drop the message
Tamper = Callable[[str, str, str, bytes], "bytes | None"]


@runtime_checkable
class Party(Protocol):
    """One protocol party as the transports see it (see :mod:`veil.protocols.machine`)."""

    @property
    def party_id(self) -> str:
        """Name on the network."""
        ...

    @property
    def stage(self) -> str:
        """Stage name of the current state."""
        ...

    @property
    def done(self) -> bool:
        """Finished (``DONE`` or ``ERROR``)."""
        ...

    @property
    def expects_deadline(self) -> bool:
        """Whether the current state closes on the transport's deadline."""
        ...

    @property
    def waiting_for(self) -> frozenset[str]:
        """Parties the current stage still awaits."""
        ...

    def start(self) -> None:
        """Begin the protocol."""
        ...

    def receive(self, sender: str, data: bytes) -> None:
        """Handle one message from ``sender``."""
        ...

    def on_deadline(self) -> None:
        """The stage's deadline passed."""
        ...

    def outbox(self) -> list[tuple[str, bytes]]:
        """Queued ``(receiver, bytes)``; empties the queue."""
        ...


@dataclass
class DriveTrace:
    """What the driver saw.

    Attributes:
        bytes_sent / bytes_received: per party (bytes handed to / delivered by the driver).
        time_s: per party, seconds inside its handlers, per stage.
        dropped: party → stage at which it went silent (dropout schedule or a handler
            past its deadline).
        late: party → stage at which a handler ran past the deadline.
        errors: ``(party, stage, error type)`` of refused messages and failed handlers.
        stages: the stages closed, in order.
        undelivered: ``(sender, receiver, bytes)`` in flight when the drive paused
            (``until``).
    """

    bytes_sent: dict[str, int] = field(default_factory=dict)
    bytes_received: dict[str, int] = field(default_factory=dict)
    time_s: dict[str, dict[str, float]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    late: dict[str, str] = field(default_factory=dict)
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    undelivered: list[tuple[str, str, bytes]] = field(default_factory=list)


_Job = tuple[str, Callable[[], None]]
_Outcome = tuple[str, BaseException | None, float, bool]  # party, error, seconds, timed out


class _Batch(threading.Thread):
    """Runs jobs one after another; the driver may abandon it while a job runs."""

    def __init__(self, jobs: list[_Job]) -> None:
        super().__init__(daemon=True, name="veil-driver-worker")
        self.jobs = jobs
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.results: list[_Outcome] = []
        self.current = 0
        self.t0 = time.perf_counter()
        self.abandoned = False

    def run(self) -> None:
        for i, (pid, fn) in enumerate(self.jobs):
            with self.lock:
                if self.abandoned:
                    return
                self.current, self.t0 = i, time.perf_counter()
            err: BaseException | None = None
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the driver thread
                err = exc
            dt = time.perf_counter() - self.t0
            with self.lock:
                if self.abandoned:
                    return
                self.results.append((pid, err, dt, False))
        self.finished.set()


def _run_jobs(jobs: list[_Job], limit: float | None) -> list[_Outcome]:
    """Run ``jobs`` in order; a job past ``limit`` seconds is abandoned (timed out)."""
    if limit is None:
        out: list[_Outcome] = []
        for pid, fn in jobs:
            t0, err = time.perf_counter(), None
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001
                err = exc
            out.append((pid, err, time.perf_counter() - t0, False))
        return out
    out = []
    poll = min(max(limit / 4, 0.001), 0.05)
    while jobs:
        batch = _Batch(jobs)
        batch.start()
        while not batch.finished.wait(poll):
            with batch.lock:
                if time.perf_counter() - batch.t0 > limit and len(batch.results) == batch.current:
                    batch.abandoned = True
                    i = batch.current
                    out.extend(batch.results)
                    out.append((jobs[i][0], None, time.perf_counter() - batch.t0, True))
                    jobs = jobs[i + 1:]
                    break
        else:
            out.extend(batch.results)
            jobs = []
    # a handler that returned, but after the deadline, is late too
    return [(p, e, dt, late or dt > limit) for p, e, dt, late in out]


def drive(
    parties: Iterable[Party],
    *,
    stage_deadline_s: float | None = DEFAULT_STAGE_DEADLINE_S,
    close_timeout_s: float | None = None,
    drops: Mapping[str, str] | None = None,
    tamper: Tamper | None = None,
    stages: Iterable[str] | None = None,
    until: str | None = None,
    side_channels: SideChannels = OFF,
) -> DriveTrace:
    """Run ``parties`` to completion in this process.

    Args:
        parties: the parties (distinct ``party_id``).
        stage_deadline_s: longest a party's handler may take in a stage (None: no limit —
            then a blocking handler blocks the drive).
        close_timeout_s: limit for the handlers of the parties that own the clock (those
            whose state closes on a deadline, e.g. a server); None: no limit.
        drops: party → stage name at which it goes silent.
        tamper: hook to alter or drop messages in transit.
        stages: the protocol's stage names, to validate ``drops`` against.
        until: pause when the clock-owning parties enter this stage: return before
            delivering the messages that open it (they are in ``trace.undelivered``).
        side_channels: fixed deadlines with shuffled delivery to the clock-owning
            parties, and random delays at the others (default: off).

    Returns:
        The trace; read each party's ``result``.

    Raises:
        ConfigError: duplicate party ids, unknown stages in ``drops``, or fixed deadlines
            without a ``stage_deadline_s``.
        AbortError: a deadline callback failed or ran past ``close_timeout_s``.
        VeilError: whatever a deadline callback raised (the protocol could not go on).
    """
    by_id: dict[str, Party] = {}
    for p in parties:
        if p.party_id in by_id:
            raise ConfigError(f"two parties are called {p.party_id!r}")
        by_id[p.party_id] = p
    drops = dict(drops or {})
    policy = side_channels
    if policy.fixed_deadlines and stage_deadline_s is None:
        raise ConfigError("fixed deadlines need a stage_deadline_s (the length of each stage)")
    if stages is not None:
        known = set(stages)
        bad = sorted({s for s in drops.values() if s not in known})
        if bad:
            raise ConfigError(f"unknown dropout stages {bad}; use {tuple(stages)}")
    trace = DriveTrace(
        bytes_sent=dict.fromkeys(by_id, 0),
        bytes_received=dict.fromkeys(by_id, 0),
        time_s={p: {} for p in by_id},
    )
    gone: set[str] = set()
    pending: list[tuple[str, str, bytes]] = []
    held: list[tuple[str, str, bytes]] = []  # for clock owners, until the deadline

    def silent(pid: str) -> bool:
        if pid in gone:
            return True
        if drops.get(pid) == by_id[pid].stage:
            gone.add(pid)
            trace.dropped[pid] = drops[pid]
            return True
        return False

    def run(calls: list[tuple[str, str, Callable[[], None]]]) -> None:
        """calls: (party, stage label, fn); collects outboxes into ``pending``.

        Parties that own a clock (their state closes on a deadline) are bounded by
        ``close_timeout_s``; the parties the clock waits for by ``stage_deadline_s``."""
        owners = {pid for pid, _, _ in calls if by_id[pid].expects_deadline}
        for group, limit in ((True, close_timeout_s), (False, stage_deadline_s)):
            part = [c for c in calls if (c[0] in owners) is group]
            if part:
                jobs = [(pid, fn if group else delayed(fn)) for pid, _, fn in part]
                finish(part, _run_jobs(jobs, limit))

    def delayed(fn: Callable[[], None]) -> Callable[[], None]:
        if policy.site_delay_s <= 0:
            return fn

        def job() -> None:
            fn()
            time.sleep(policy.delay())  # before the driver takes what it queued

        return job

    def finish(calls: list[tuple[str, str, Callable[[], None]]], outcomes: list[_Outcome]) -> None:
        for (_, st, _), (pid, err, dt, timed_out) in zip(calls, outcomes):
            t = trace.time_s[pid]
            t[st] = t.get(st, 0.0) + dt
            if timed_out:
                gone.add(pid)
                trace.late[pid] = trace.dropped[pid] = st
                continue
            if err is not None:
                if not isinstance(err, VeilError):
                    raise err
                trace.errors.append((pid, st, type(err).__name__))
            collect(pid, st)

    def collect(pid: str, st: str) -> None:
        for to, data in by_id[pid].outbox():
            trace.bytes_sent[pid] += len(data)
            msg = tamper(st, pid, to, data) if tamper else data
            if msg is not None:
                pending.append((pid, to, msg))

    def deliver(sender: str, to: str, data: bytes) -> Callable[[], None]:
        return lambda: by_id[to].receive(sender, data)

    def calls_for(batch: list[tuple[str, str, bytes]]) -> list[tuple[str, str, Callable[[], None]]]:
        calls = []
        for sender, to, data in batch:
            if to not in by_id or silent(to):
                continue
            trace.bytes_received[to] += len(data)
            calls.append((to, by_id[to].stage, deliver(sender, to, data)))
        return calls

    def hold(to: str) -> bool:
        return policy.fixed_deadlines and to in by_id and by_id[to].expects_deadline

    opened = time.monotonic()  # the first stage opens with the start calls
    run([(pid, p.stage, p.start) for pid, p in by_id.items() if not silent(pid)])
    while True:
        while pending:
            batch, pending[:] = list(pending), []
            held.extend(msg for msg in batch if hold(msg[1]))
            run(calls_for([msg for msg in batch if not hold(msg[1])]))
        clocks = [
            (pid, p) for pid, p in by_id.items()
            if pid not in gone and not p.done and p.expects_deadline
        ]
        if not clocks:
            return trace
        if policy.fixed_deadlines:
            # the stage ends at its deadline, not when the last message came in; then the
            # clock owners get the stage's messages, in an order arrival cannot set
            time.sleep(max(0.0, opened + float(stage_deadline_s or 0.0) - time.monotonic()))
            for pid, _ in clocks:
                mine = [(s, d) for s, to, d in held if to == pid]
                run(calls_for([(s, pid, d) for s, d in policy.order(mine)]))
            held.clear()
            clocks = [(pid, p) for pid, p in clocks if pid not in gone and not p.done]
            if not clocks:  # pragma: no cover - a clock owner failed on a held message
                return trace
        trace.stages.append(clocks[0][1].stage)
        outcomes = _run_jobs([(pid, p.on_deadline) for pid, p in clocks], close_timeout_s)
        for (pid, p), (_, err, dt, timed_out) in zip(clocks, outcomes):
            st = trace.stages[-1]
            trace.time_s[pid][st] = trace.time_s[pid].get(st, 0.0) + dt
            if timed_out:
                raise AbortError(f"stage {st}: {pid} did not close the stage in time")
            if err is not None:
                raise err
            collect(pid, st)
        opened = time.monotonic()
        if until is not None and clocks[0][1].stage == until:
            trace.undelivered = list(pending)
            return trace

