"""Side channels of a SecAgg+ round: what the server sees besides the protocol's content.

The adversary is a recording observer written for this test: it wraps the real server
machine and logs everything the server's state machine is shown — each call (a message
from a named site, a deadline), in order, the size of every message in and out, and the
time of each call within its stage, in buckets of a quarter deadline (all times at or
past the deadline fall in one last bucket). It runs rounds over cohorts that differ in one
site's data, and over one where a site answers slower, and the test asserts that with the
protections on (fixed deadlines, shuffled delivery, padded messages, site delays) the
observer's logs are **identical**; as controls, with the protections off the same
observer tells the slow site apart (timing in process, order over TCP + TLS), and message
sizes follow the dropouts.

The server still learns the sum (its output) and who took part (sender names, which
SecAgg+ needs to unmask); those are not side channels and are the same in the compared
runs. To compare two runs' orders exactly, the protected runs use a seeded shuffle (the
order must then be a function of the messages only, never of their arrival); the default
shuffle is checked separately to be a CSPRNG permutation.
"""

from __future__ import annotations

import collections
import itertools
import random
import threading
import time

import numpy as np
import pytest
from tcp_parties import connect_all, free_ports, make_certs

from veil.errors import ConfigError, LocalError, MalformedMessageError
from veil.protocols import padding
from veil.protocols.secagg import SERVER, SecAggClient, SecAggConfig, SecAggServer, site_name
from veil.protocols.secagg import messages as m
from veil.transport.driver import drive
from veil.transport.loop import run_party
from veil.transport.sidechannels import OFF, SideChannels

N, DIM, BITS = 4, 32, 16
SLOW = 0  # the site that answers slower in the "slow" cohort


class Observer:
    """The server as the adversary sees it: every call into it, logged.

    Each entry is ``(stage, kind, sender, size, bucket)``; the bucket is the call's time
    since the stage opened (the previous deadline call returned, or the round began) in
    quarter deadlines, all times at or past the deadline in one last bucket (4). The raw
    times are kept in :attr:`times` beside the log.
    """

    def __init__(self, server: SecAggServer, deadline_s: float) -> None:
        self.server, self.deadline_s, self.res = server, deadline_s, deadline_s / 4
        self.log: list[tuple[str, str, str, int, int]] = []
        self.times: list[float] = []
        self._opened = time.monotonic()
        #: when set, the first stage opens here rather than at start(): a driver that
        #: takes its clock before it calls start() then never measures more than we do
        self.anchor: float | None = None

    def _record(self, stage: str, kind: str, who: str, size: int) -> None:
        dt = time.monotonic() - self._opened
        self.times.append(dt)
        self.log.append((stage, kind, who, size, min(int(dt / self.res), 4)))

    party_id = property(lambda self: self.server.party_id)
    stage = property(lambda self: self.server.stage)
    done = property(lambda self: self.server.done)
    expects_deadline = property(lambda self: self.server.expects_deadline)
    waiting_for = property(lambda self: self.server.waiting_for)

    def start(self) -> None:
        self.server.start()
        self._opened = time.monotonic() if self.anchor is None else self.anchor

    def receive(self, sender: str, data: bytes) -> None:
        self._record(self.stage, "in", sender, len(data))
        self.server.receive(sender, data)

    def on_deadline(self) -> None:
        self._record(self.stage, "deadline", "", 0)
        self.server.on_deadline()
        self._opened = time.monotonic()

    def outbox(self) -> list[tuple[str, bytes]]:
        out = self.server.outbox()
        for to, d in out:
            self._record(self.stage, "out", to, len(d))
        return out

    def senders(self, stage: str) -> list[str]:
        return [p for st, kind, p, _, _ in self.log if st == stage and kind == "in"]


class Slow:
    """A site whose every handler takes ``delay_s`` longer (compute time, not protocol)."""

    def __init__(self, client: SecAggClient, delay_s: float) -> None:
        self.client, self.delay_s = client, delay_s

    def __getattr__(self, name: str):  # the rest of the Party interface
        return getattr(self.client, name)

    def start(self) -> None:
        time.sleep(self.delay_s)
        self.client.start()

    def receive(self, sender: str, data: bytes) -> None:
        time.sleep(self.delay_s)
        self.client.receive(sender, data)


def _inputs(changed: bool) -> dict[int, np.ndarray]:
    x = {u: np.random.default_rng(u).integers(0, 2**12, DIM, dtype=np.uint64) for u in range(N)}
    if changed:  # the neighbouring cohort: site 2 holds other data
        x[2] = np.random.default_rng(99).integers(0, 2**12, DIM, dtype=np.uint64)
    return x


def _config(round_: int, pad: bool, n: int = N, k: int | None = None) -> SecAggConfig:
    k = n - 1 if k is None else k
    return SecAggConfig(round_, tuple(range(n)), DIM, BITS, k, k // 2 + 1, bytes(32),
                        pad_messages=pad)


def _expected(x: dict[int, np.ndarray]) -> np.ndarray:
    return sum(x.values()) & np.uint64(2**BITS - 1)


# ---- in process: drive ---------------------------------------------------------------
# The protected rounds last their deadline per stage, so the deadline is what the test
# costs (3 rounds x 5 stages); it is also each site's handler budget, and the slow site
# sleeps SLOW_S in every handler: 0.4 s leaves it 0.28 s of margin for a loaded machine.
PROTECTED_S, SLOW_S = 0.4, 0.12


def _driven(scenario: str, protected: bool, deadline: float = PROTECTED_S,
            slow_s: float = SLOW_S):
    x = _inputs(scenario == "data")
    cfg = _config(1, pad=protected)
    obs = Observer(SecAggServer(cfg), deadline)
    sites = []
    for u in range(N):
        c = SecAggClient(cfg, u, x[u])
        sites.append(Slow(c, slow_s) if scenario == "slow" and u == SLOW else c)
    policy = (SideChannels(True, 0.01, shuffle=random.Random(0).shuffle) if protected else OFF)
    t0 = obs.anchor = time.monotonic()  # before drive takes its clock (see Observer)
    trace = drive([obs, *sites], stage_deadline_s=deadline, side_channels=policy)
    elapsed = time.monotonic() - t0
    assert not trace.dropped, trace.dropped  # nobody ran past the deadline
    assert np.array_equal(obs.server.result.total, _expected(x))
    return obs, elapsed


def _server_view(runs: list[Observer]) -> bool:
    """Whether the runs look the same to the server, timing included.

    The calls (stage, kind, sender, size) must be identical, in the same order; and every
    call that a site's behaviour could time — a message in, the deadline — must come at or
    past its stage's deadline (the last bucket), so the timing of those is identical too.
    The server's own sends follow its deadline call at once (they are its own compute,
    not a site's): their order is compared, their clock time is not, so a scheduler pause
    on a loaded machine cannot tell two identical views apart.
    """
    calls = [[e[:4] for e in r.log] for r in runs]
    timed = [[e[4] for e in r.log if e[1] != "out"] for r in runs]
    return (all(c == calls[0] for c in calls)
            and all(b == 4 for t in timed for b in t))


def test_in_process_rounds_look_the_same_to_the_server_with_the_protections_on() -> None:
    base, elapsed = _driven("base", True)
    data, _ = _driven("data", True)
    slow, _ = _driven("slow", True)
    assert _server_view([base, data, slow])
    # bucketed logs agree for every site-timed call: every message reaches the server only
    # at its stage's deadline, and every stage lasted its full deadline: the cost of
    # hiding who answered first
    for run in (base, data, slow):
        assert all(dt >= PROTECTED_S for (_, kind, *_), dt in zip(run.log, run.times)
                   if kind != "out")
    assert elapsed >= 5 * PROTECTED_S
    # one size per message type: a site's messages cannot be told apart by length
    sizes = collections.defaultdict(set)
    for st, kind, _, size, _ in base.log:
        sizes[(st, kind)].add(size)
    assert all(len(v) == 1 for v in sizes.values())


def test_in_process_control_the_server_tells_the_slow_site_without_them() -> None:
    # Without the protections nothing waits for a deadline, so a long one costs nothing
    # and keeps a loaded machine from dropping anybody; a slower site (0.3 s per handler,
    # 0.25 s buckets) is what the observer must see.
    base, _ = _driven("base", False, deadline=1.0)
    slow, _ = _driven("slow", False, deadline=1.0, slow_s=0.3)
    assert not _server_view([base, slow])  # the check above can fail: it fails here
    assert not _server_view([base]) and not _server_view([slow])  # messages come early
    late = [dt for (st, kind, *_), dt in zip(slow.log, slow.times)
            if kind == "in" and st == "advertise"]
    assert min(late) >= 0.3  # every message of the stage waits behind the slow site
    assert all(b < 4 for _, kind, _, _, b in base.log if kind == "in")  # before the deadline


# ---- TCP + mutual TLS: run_party in threads ------------------------------------------
@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """A star of TLS links: the server and N sites, connected once for all rounds."""
    d = tmp_path_factory.mktemp("side-channels")
    names = [SERVER, *map(site_name, range(N))]
    make_certs(d, names)
    addrs = dict(zip(names, (("127.0.0.1", p) for p in free_ports(len(names)))))
    star = {SERVER: names[1:]}  # the server talks to every site, a site to the server only
    chans, errs = connect_all(d, addrs, lambda n: star.get(n, [SERVER]), connect_timeout_s=20)
    assert not errs and len(chans) == len(names), errs
    yield chans
    for ch in chans.values():
        ch.close()


_rounds = itertools.count(10)


class Tap:
    """The server's socket layer, below veil's transport: logs who arrived, in order."""

    def __init__(self, channel) -> None:
        self.channel, self.arrivals = channel, []

    party_id = property(lambda self: self.channel.party_id)

    def send(self, to: str, payload: bytes) -> None:
        self.channel.send(to, payload)

    def recv_any(self, timeout=None):
        sender, data = self.channel.recv_any(timeout)
        self.arrivals.append(sender)
        return sender, data


def _over_tcp(chans, scenario: str, protected: bool, deadline: float = 0.5):
    """One round over the TLS star; sites answer 40 ms apart (site 0 first), and in the
    "slow" cohort site 0 is 200 ms slower than that."""
    x = _inputs(scenario == "data")
    cfg = _config(next(_rounds), pad=protected)
    obs = Observer(SecAggServer(cfg), deadline)
    site_policy = SideChannels(site_delay_s=0.02) if protected else OFF
    errors = []

    def site(u: int) -> None:
        delay = 0.04 * u + (0.2 if scenario == "slow" and u == SLOW else 0.0)
        try:
            run_party(Slow(SecAggClient(cfg, u, x[u]), delay), chans[site_name(u)],
                      idle_timeout_s=20, side_channels=site_policy)
        except Exception as exc:  # noqa: BLE001
            errors.append((u, exc))

    threads = [threading.Thread(target=site, args=(u,)) for u in range(N)]
    for t in threads:
        t.start()
    policy = (SideChannels(True, shuffle=random.Random(0).shuffle) if protected else OFF)
    tap = Tap(chans[SERVER])
    trace = run_party(obs, tap, stage_deadline_s=deadline, side_channels=policy)
    for t in threads:
        t.join(20)
    assert not errors, errors
    assert np.array_equal(obs.server.result.total, _expected(x))
    obs.arrivals = tap.arrivals
    return obs, trace


def test_over_tls_rounds_look_the_same_to_the_server_with_the_protections_on(mesh) -> None:
    # (the cohort with other data is compared in process above; here: who answers first)
    base, trace = _over_tcp(mesh, "base", True)
    slow, _ = _over_tcp(mesh, "slow", True)
    assert base.log == slow.log
    assert {b for _, kind, _, _, b in slow.log if kind == "in"} == {4}
    assert all(seconds >= 0.5 for _, seconds in trace.stages)  # full deadline, always
    # what stays visible (docs): a server that watches its own sockets still sees a site
    # 200 ms slower arrive last in each stage; 20 ms random delays blur, they do not hide
    stages = [slow.arrivals[i:i + N] for i in range(0, len(slow.arrivals), N)]
    assert len(stages) == 5 and all(st[-1] == site_name(SLOW) for st in stages)


def test_over_tls_control_arrival_order_tells_who_answered_last_without_them(mesh) -> None:
    base, trace = _over_tcp(mesh, "base", False)
    slow, _ = _over_tcp(mesh, "slow", False)
    assert base.log != slow.log
    stages = ("advertise", "share", "masked", "consistency", "unmask")
    # the server processes messages as they arrive: the slow site is last in every stage
    assert all(slow.senders(st)[-1] == site_name(SLOW) for st in stages)
    assert not all(base.senders(st)[-1] == site_name(SLOW) for st in stages)
    # and a stage ends as soon as everybody answered (what fixed deadlines give up)
    assert all(seconds < 0.5 for _, seconds in trace.stages)


# ---- sizes ---------------------------------------------------------------------------
def _site_sizes(pad: bool, drop: int) -> tuple[dict[str, set[int]], SecAggConfig]:
    """Sizes of what the sites send per stage, n = 7, k = 4, site ``drop`` gone at masked."""
    cfg = _config(3, pad=pad, n=7, k=4)
    x = {u: np.full(DIM, u + 1, dtype=np.uint64) for u in range(7)}
    obs = Observer(SecAggServer(cfg), 1.0)
    drive([obs, *(SecAggClient(cfg, u, x[u]) for u in range(7))], drops={site_name(drop): "masked"})
    assert np.array_equal(obs.server.result.total,
                          sum(x[u] for u in range(7) if u != drop) & np.uint64(2**BITS - 1))
    sizes = collections.defaultdict(set)
    for st, kind, _, size, _ in obs.log:
        if kind == "in":
            sizes[st].add(size)
    return sizes, cfg


def test_padded_messages_have_one_size_per_stage_whatever_the_dropouts() -> None:
    types = {"advertise": m.AdvertiseKeys, "share": m.ShareKeys, "masked": m.MaskedInput,
             "consistency": m.ConsistencyAck, "unmask": m.UnmaskResponse}
    for drop in (1, 4):
        sizes, cfg = _site_sizes(True, drop)
        assert sizes == {st: {m.wire_size(t, cfg)} for st, t in types.items()}
    # control: unpadded, a dropped site's neighbours send fewer consistency tags
    sizes, _ = _site_sizes(False, 1)
    assert len(sizes["consistency"]) == 2


def test_padding_is_stripped_strictly() -> None:
    assert padding.unpad(padding.pad(b"abc", 16), 16) == b"abc"
    frame = padding.pad(b"abc", 16)
    for bad in (frame[:-1], frame + b"\x00", frame[:-1] + b"\x01",
                (99).to_bytes(4, "little") + frame[4:]):
        with pytest.raises(MalformedMessageError):
            padding.unpad(bad, len(frame))
    with pytest.raises(LocalError):
        padding.pad(b"x" * 13, 16)
    # a padding server refuses an unpadded message, and a covert payload in the fill
    cfg = _config(1, pad=True)
    adv = SecAggClient(cfg, 0, np.zeros(DIM, np.uint64))
    adv.start()
    (_, data), = adv.outbox()
    assert isinstance(m.decode(data, cfg), m.AdvertiseKeys)
    server = SecAggServer(cfg)
    with pytest.raises(MalformedMessageError):
        server.receive("0", padding.unpad(data))
    assert server.waiting_for == frozenset(map(site_name, range(N)))  # refused, still awaited
    masked = m.encode(m.MaskedInput(cfg.round, 0, bytes(DIM * BITS // 8)), cfg)
    assert len(masked) == m.wire_size(m.MaskedInput, cfg) > len(padding.unpad(masked)) + 4
    with pytest.raises(MalformedMessageError, match="fill"):
        m.decode(masked[:-1] + b"\x07", cfg)


# ---- the shuffle and the delays ------------------------------------------------------
def test_the_default_shuffle_is_a_csprng_permutation_independent_of_arrival() -> None:
    policy = SideChannels(fixed_deadlines=True)
    held = [(site_name(u), bytes([u])) for u in range(4)]
    seen = collections.Counter(tuple(s for s, _ in policy.order(held)) for _ in range(400))
    # all 24 orders appear: P(one is missing) <= 24 * (23/24)**400 < 1e-6
    assert len(seen) == 24
    # with one shuffle stream, the order depends on which messages came, not when
    a = SideChannels(True, shuffle=random.Random(5).shuffle).order(held)
    b = SideChannels(True, shuffle=random.Random(5).shuffle).order(held[::-1])
    assert a == b
    # one sender's messages keep their order (a channel preserves order per pair)
    two = [("1", b"a"), ("0", b"x"), ("1", b"b")]
    out = SideChannels(True).order(two)
    assert [d for s, d in out if s == "1"] == [b"a", b"b"]


def test_site_delays_are_random_and_bounded_and_bad_settings_are_refused() -> None:
    policy = SideChannels(site_delay_s=0.5)
    draws = [policy.delay() for _ in range(200)]
    assert all(0 <= d < 0.5 for d in draws) and len(set(draws)) == 200
    assert OFF.delay() == 0.0 and not OFF.active
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError):
            SideChannels(site_delay_s=bad)
    with pytest.raises(ConfigError):
        drive([], stage_deadline_s=None, side_channels=SideChannels(True))


def test_config_keys_reach_the_round() -> None:
    from veil.federation.build import build_pipeline
    from veil.federation.config import RunConfig

    cfg = RunConfig.model_validate({"aggregation": {
        "summation": "secagg", "fixed_deadlines": True, "stage_deadline_s": 0.05,
        "pad_messages": True, "site_delay_s": 0.001,
    }})
    summ = build_pipeline(cfg).summation
    assert (summ.fixed_deadlines, summ.pad_messages, summ.site_delay_s) == (True, True, 0.001)
    assert summ.config(np.arange(4), DIM, 0).pad_messages
    rows = np.arange(4 * DIM, dtype=np.int64).reshape(4, DIM) % 100
    t0 = time.monotonic()
    res = summ.aggregate(rows, np.arange(4), 0)
    assert time.monotonic() - t0 >= 5 * 0.05  # every stage lasted its deadline
    assert np.array_equal(res.total, rows.sum(0) % 2**summ.bits)
    assert res.measurements["fixed_deadlines"] == 1.0
    assert res.measurements["critical_path_s"] >= 5 * 0.05  # the modelled latency too
    for bad in ({"summation": "plain", "pad_messages": True},
                {"summation": "secagg", "fixed_deadlines": True},
                {"summation": "secagg", "stage_deadline_s": 0.1, "site_delay_s": 0.1}):
        with pytest.raises(Exception, match="aggregation"):
            RunConfig.model_validate({"aggregation": bad})


# ---- Flower messages: GridLink -------------------------------------------------------
class _EchoGrid:
    """A Flower Grid whose nodes answer at once, in the order ``answer_order`` gives."""

    def __init__(self, answer_order) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 0, 1
        self.answer_order = answer_order

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Message

        from veil.transport.flower import Envelope, pack, unpack

        out = [Message(pack(Envelope("stage", 1, unpack(msg.content).payload)), reply_to=msg)
               for msg in messages]
        return self.answer_order(out)


def test_flower_exchanges_last_their_timeout_and_return_replies_shuffled() -> None:
    pytest.importorskip("flwr", reason="the Flower transport needs the flower extra")
    from veil.transport.flower import Envelope, GridLink

    nodes = {site_name(u): 100 + u for u in range(N)}
    outgoing = {p: Envelope("stage", 1, p.encode()) for p in nodes}
    orders = []
    for answer_order in (list, lambda xs: xs[::-1]):
        link = GridLink(_EchoGrid(answer_order), nodes,
                        side_channels=SideChannels(True, shuffle=random.Random(3).shuffle))
        t0 = time.monotonic()
        got = link.exchange(outgoing, 0.2)
        assert time.monotonic() - t0 >= 0.2  # everybody answered at once; it still waited
        assert {p: e.payload for p, e in got.items()} == {p: p.encode() for p in nodes}
        orders.append(list(got))
    assert orders[0] == orders[1]  # the order the server sees ignores the arrival order
    # control: without the policy the reply order is the arrival order, and no waiting
    plain = [list(GridLink(_EchoGrid(o), nodes).exchange(outgoing, 5.0))
             for o in (list, lambda xs: xs[::-1])]
    assert plain[0] == plain[1][::-1]


def test_a_message_after_the_fixed_deadline_is_refused_and_the_round_goes_on() -> None:
    # a site whose first message comes after the stage's fixed deadline: the server has
    # closed the stage without it, and whatever it sends later does not enter the sum
    x = _inputs(False)
    cfg = _config(1, pad=True)
    obs = Observer(SecAggServer(cfg), PROTECTED_S)
    sites = [Slow(SecAggClient(cfg, u, x[u]), 2.5 * PROTECTED_S) if u == SLOW
             else SecAggClient(cfg, u, x[u]) for u in range(N)]
    policy = SideChannels(True, 0.0, shuffle=random.Random(0).shuffle)
    trace = drive([obs, *sites], stage_deadline_s=PROTECTED_S, side_channels=policy)
    res = obs.server.result
    assert SLOW not in set(int(u) for u in res.survivors)
    others = {u: v for u, v in x.items() if u != SLOW}
    assert np.array_equal(res.total, _expected(others))  # the sum of those in time only
    assert site_name(SLOW) in trace.dropped
    # nothing from the late site was taken in any stage after it missed the first
    taken = [e for e in obs.log if e[1] == "in" and e[2] == site_name(SLOW)]
    assert all(st == obs.log[0][0] for st, *_ in taken)
