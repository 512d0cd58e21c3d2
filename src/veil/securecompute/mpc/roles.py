"""The two roles around the compute parties: the client (model owner and data owner) and
the party loop. Both speak over any :class:`~veil.transport.channel.Channel`.

Messages client ↔ party ``i`` (a JSON header with public shapes, then raw uint64 arrays):

1. ``M`` (set-up, once): the plan and party ``i``'s share pair of every model tensor;
   the party answers ``A`` after its key agreement with the other parties.
2. ``X`` (per inference): the party's share pair of the input batch; the party evaluates
   the plan with the others and answers ``Y``: its component ``y_i`` of the output plus its
   round/byte counts and online time. The client adds the three components.
3. ``Q``: stop.

The client never sends a party more than its own share pair, and only the client sees the
output. Any silent peer turns into :class:`~veil.errors.AbortError` after the deadline.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from veil.crypto.fixed import decode, encode, encode_int
from veil.crypto.prg import SecureRng
from veil.crypto.replicated import Share, share
from veil.errors import AbortError, MalformedMessageError, PeerError, ProtocolError
from veil.securecompute.mpc.net import CLIENT, PARTY_NAMES
from veil.securecompute.mpc.program import MpcConfig, evaluate_plan
from veil.securecompute.mpc.setup import make_engine
from veil.securecompute.mpc.trees import float32_key
from veil.transport.channel import Channel

if TYPE_CHECKING:
    from veil.models.ir import Model

__all__ = ["Client", "serve_party", "PhaseTimes"]

_LEN = struct.Struct("<I")


def _pack(tag: bytes, meta: dict[str, Any], arrays: list[np.ndarray]) -> bytes:
    head = json.dumps(meta).encode()
    body = b"".join(np.ascontiguousarray(a, dtype=np.uint64).tobytes() for a in arrays)
    return tag + _LEN.pack(len(head)) + head + body


def _unpack(frame: bytes, peer: str) -> tuple[bytes, dict[str, Any], memoryview]:
    if len(frame) < 5:
        raise MalformedMessageError("truncated message", peer=peer)
    (n,) = _LEN.unpack_from(frame, 1)
    try:
        meta = json.loads(frame[5 : 5 + n])
    except ValueError:
        raise MalformedMessageError("unreadable message header", peer=peer) from None
    return frame[:1], meta, memoryview(frame)[5 + n :]


def _arrays(body: memoryview, shapes: list[list[int]], peer: str) -> list[np.ndarray]:
    sizes = [int(np.prod(s)) for s in shapes]
    if len(body) != 8 * sum(sizes):
        raise MalformedMessageError(f"body of {len(body)} bytes, expected {8 * sum(sizes)}",
                                    peer=peer)
    out, off = [], 0
    for s, n in zip(shapes, sizes):
        out.append(np.frombuffer(body, dtype=np.uint64, count=n, offset=off).reshape(s))
        off += 8 * n
    return out


def _recv(ch: Channel, peer: str, deadline_s: float, what: str) -> bytes:
    try:
        return ch.recv(peer, timeout=deadline_s)
    except PeerError as e:
        raise AbortError(
            f"{what}: {peer} did not answer within {deadline_s:g} s or its connection broke "
            f"({type(e).__name__}); no result is released"
        ) from None


def serve_party(channel: Channel, cfg: MpcConfig | None = None) -> int:
    """Run compute party ``channel.party_id`` (p0, p1 or p2) until the client says stop.

    The client may send a new model (``M``) at any time; component keys are agreed once.
    Returns the number of inferences served.

    Raises:
        AbortError: a peer or the client went silent past the deadline.
        ProtocolError / MalformedMessageError: a message out of order or malformed.
    """
    cfg = cfg or MpcConfig()
    me = channel.party_id
    frame = _recv(channel, CLIENT, cfg.deadline_s, f"{me} set-up")
    eng = None
    served = 0
    while True:
        tag, meta, body = _unpack(frame, CLIENT)
        if tag == b"Q":
            return served
        if tag == b"M":  # (another) model: keys are agreed once, on the first
            plan = meta["plan"]
            flat = _arrays(body, [s for s in plan["shapes"] for _ in (0, 1)], CLIENT)
            weights = [Share(flat[2 * k], flat[2 * k + 1])  # read-only views, never written
                       for k in range(len(flat) // 2)]
            first = eng is None
            if eng is None:
                eng = make_engine(channel, frac_bits=int(plan["frac_bits"]),
                                  deadline_s=cfg.deadline_s)
            eng.f = int(plan["frac_bits"])
            stats = eng.net.stats.as_dict() if first else {"rounds": {}, "bytes": {}}
            channel.send(CLIENT, _pack(b"A", {"stats": stats}, []))
            eng.net.stats = type(eng.net.stats)()
        elif tag != b"X" or eng is None:
            raise ProtocolError(f"unexpected message {tag!r} from the client", peer=CLIENT)
        else:
            served += 1
            _serve_one(channel, eng, plan, weights, meta, body)
        frame = _recv(channel, CLIENT, 3600.0, f"{me} waiting for the client")


def _serve_one(channel: Channel, eng: Any, plan: dict[str, Any], weights: list[Share],
               meta: dict[str, Any], body: memoryview) -> None:
    """One inference: evaluate on the input shares, send this party's output component."""
    shape = meta["shape"]
    xa, xb = _arrays(body, [shape, shape], CLIENT)
    # all three hold their input shares before the online clock starts (like SPU's
    # link barrier): the skew of the client's three sends belongs to the input phase
    peers = [j for j in range(3) if j != eng.i]
    eng.net.exchange({j: [] for j in peers}, {j: [] for j in peers})
    eng.net.stats = type(eng.net.stats)()
    t0 = time.perf_counter()
    y = evaluate_plan(eng, plan, weights, Share(xa, xb))  # read-only views, never written
    online = time.perf_counter() - t0
    channel.send(CLIENT, _pack(b"Y", {"shape": list(y.shape), "online_s": online,
                                      "stats": eng.net.stats.as_dict()}, [y.a]))


@dataclass
class PhaseTimes:
    """One inference: seconds per phase, traffic and the per-operation counts."""

    input_s: float
    online_s: float
    reveal_s: float
    rounds: int
    bytes: int  # sent between the compute parties during the online phase
    per_op: dict[str, dict[str, int]] = field(default_factory=dict)
    input_bytes: int = 0  # client → parties (input shares)
    reveal_bytes: int = 0  # parties → client (output shares and counts)


class Client:
    """Model owner + data owner: shares the model once, then runs inferences.

    Args:
        channel: the client's channel (party id ``client``) to p0, p1, p2.
        model: the IR model (its weights never leave this object unshared).
        cfg: engine parameters.
    """

    def __init__(self, channel: Channel, model: Model, cfg: MpcConfig | None = None) -> None:
        self.channel = channel
        self.model = model
        self.cfg = cfg or MpcConfig()
        self.rng = SecureRng.fresh()
        self.plan: dict[str, Any] | None = None
        self.setup_s = 0.0
        self.setup_bytes = 0
        self.last: PhaseTimes | None = None

    def __repr__(self) -> str:
        return f"Client(model={self.model.name!r})"

    def load(self, model: Model) -> None:
        """Share another model with the same parties (keys stay; no reconnection)."""
        self.model = model
        self.setup()

    def setup(self) -> None:
        """Compile and share the model; on first use the parties also agree on keys."""
        from veil.securecompute.mpc.plan import compile_model

        t0 = time.perf_counter()
        plan, tensors = compile_model(self.model, self.cfg)
        per_party: list[list[np.ndarray]] = [[], [], []]
        for t in tensors:
            for i, s in enumerate(share(t, self.rng)):
                per_party[i] += [s.a, s.b]
        sent = 0
        for i, name in enumerate(PARTY_NAMES):
            msg = _pack(b"M", {"plan": plan}, per_party[i])
            self.channel.send(name, msg)
            sent += len(msg)
        for name in PARTY_NAMES:
            tag, meta, _ = _unpack(_recv(self.channel, name, self.cfg.deadline_s, "set-up"), name)
            if tag != b"A":
                raise ProtocolError(f"expected set-up acknowledgement, got {tag!r}", peer=name)
            sent += sum(meta["stats"]["bytes"].values())
        self.plan = plan
        self.setup_s = time.perf_counter() - t0
        self.setup_bytes = sent

    def infer(self, x: np.ndarray) -> np.ndarray:
        """The model's output on the batch ``x`` (N, *input_shape), computed by the parties.

        Raises:
            ConfigError: wrong input shape or a value outside the fixed-point range.
            AbortError: a party failed or went silent.
        """
        if self.plan is None:
            self.setup()
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1:] != self.model.input_shape:
            from veil.errors import ConfigError

            raise ConfigError(f"input batch {x.shape} does not match (N, *{self.model.input_shape})")
        t0 = time.perf_counter()
        if self.plan["input_encoding"] == "float32-key":
            ring = encode_int(float32_key(x))
        else:
            ring = encode(x, self.cfg.frac_bits)
        shares = share(ring, self.rng)
        sent_in = 0
        for i, name in enumerate(PARTY_NAMES):
            msg = _pack(b"X", {"shape": list(x.shape)}, [shares[i].a, shares[i].b])
            self.channel.send(name, msg)
            sent_in += len(msg)
        t1 = time.perf_counter()
        comps, online, per_op, rounds, online_bytes, out_bytes = [], 0.0, {}, 0, 0, 0
        for i, name in enumerate(PARTY_NAMES):
            frame = _recv(self.channel, name, 10 * self.cfg.deadline_s, "inference")
            tag, meta, body = _unpack(frame, name)
            if tag != b"Y":
                raise ProtocolError(f"expected an output share, got {tag!r}", peer=name)
            comps.append(_arrays(body, [meta["shape"]], name)[0])
            online = max(online, float(meta["online_s"]))
            st = meta["stats"]
            online_bytes += sum(st["bytes"].values())
            out_bytes += len(frame)
            if i == 0:
                rounds = sum(st["rounds"].values())
            for op, b in st["bytes"].items():
                d = per_op.setdefault(op, {"rounds": 0, "bytes": 0})
                d["bytes"] += b
                if i == 0:
                    d["rounds"] = st["rounds"].get(op, 0)
        y = decode(comps[0] + comps[1] + comps[2], self.cfg.frac_bits)
        t2 = time.perf_counter()
        self.last = PhaseTimes(t1 - t0, online, max(0.0, t2 - t1 - online), rounds,
                               online_bytes, per_op, sent_in, out_bytes)
        return y

    def close(self) -> None:
        """Tell the parties to stop (best effort)."""
        for name in PARTY_NAMES:
            try:
                self.channel.send(name, _pack(b"Q", {}, []))
            except PeerError:
                pass
