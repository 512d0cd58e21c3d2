"""Flower messages as a veil transport: protocol bytes in Flower ``Message`` / ``RecordDict``.

A Flower deployment moves messages between a ServerApp (through its ``Grid``) and the
ClientApps of the SuperNodes (as handlers). veil uses it as a *stage exchange*: the server
sends each site at most one message per protocol stage and collects the replies until the
stage deadline; whoever has not answered by then is silent for the stage. One exchange per
protocol stage, nothing else.

Every veil message is one Flower message whose content is a single
``ConfigRecord`` named ``"veil"`` holding:

* ``kind`` (str) — what the payload is (``"hello"``, ``"train"``, ``"stage"``...);
* ``round`` (int) — the veil round (``-1`` outside rounds);
* ``payload`` (bytes) — opaque bytes (a protocol machine's message, model parameters);
* ``meta`` (str) — a small JSON object of public values (never secrets, never statistics a
  site has not chosen to share).

Flower persists message contents in its SuperLink/SuperNode state; that is why only the
*messages* travel here: a site's protocol state (keys, shares, masks) stays in the site's
own process (:mod:`veil.deploy.agent`), never in a record Flower stores.

:class:`GridLink` is the server side (``grid.send_and_receive`` with a deadline);
:func:`pack` / :func:`unpack` / :func:`reply` are what a ClientApp handler needs.
``flwr`` is imported only when these functions run (it is the optional ``veil[flower]``
extra).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from veil.errors import LocalError, MalformedMessageError
from veil.transport.sidechannels import OFF, SideChannels

__all__ = ["RECORD", "MESSAGE_TYPE", "Envelope", "pack", "unpack", "reply", "GridLink"]

#: name of the one ConfigRecord that carries a veil message
RECORD = "veil"
#: Flower message type of every veil message (ClientApps register ``@app.query("veil")``)
MESSAGE_TYPE = "query.veil"


@dataclass(frozen=True)
class Envelope:
    """One veil message as it travels in a Flower message.

    Attributes:
        kind: what the payload is.
        round: veil round number (``-1`` outside rounds).
        payload: opaque bytes.
        meta: public JSON-able values.
    """

    kind: str
    round: int = -1
    payload: bytes = field(default=b"", repr=False)
    meta: Mapping[str, Any] = field(default_factory=dict)


def pack(env: Envelope) -> Any:
    """The Flower ``RecordDict`` that carries ``env``."""
    from flwr.app import ConfigRecord, RecordDict

    return RecordDict(
        {
            RECORD: ConfigRecord(
                {
                    "kind": env.kind,
                    "round": int(env.round),
                    "payload": bytes(env.payload),
                    "meta": json.dumps(dict(env.meta), sort_keys=True),
                }
            )
        }
    )


def unpack(content: Any) -> Envelope:
    """The :class:`Envelope` carried by a Flower ``RecordDict``.

    Raises:
        MalformedMessageError: the content is not a veil message.
    """
    try:
        rec = content.config_records[RECORD]
        meta = json.loads(str(rec["meta"]))
        if not isinstance(meta, dict):
            raise ValueError("meta is not an object")
        payload = rec["payload"]
        if not isinstance(payload, bytes):
            raise ValueError("payload is not bytes")
        return Envelope(str(rec["kind"]), int(rec["round"]), payload, meta)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedMessageError(f"not a veil message: {exc}") from None


def reply(message: Any, env: Envelope) -> Any:
    """A Flower reply to ``message`` carrying ``env`` (for ClientApp handlers)."""
    from flwr.app import Message

    return Message(pack(env), reply_to=message)


@dataclass
class ExchangeStats:
    """Counters of one :class:`GridLink` (for records and benchmarks).

    Attributes:
        exchanges: number of stage exchanges.
        bytes_down: payload bytes sent to each party.
        bytes_up: payload bytes received from each party.
        seconds: wall time of each exchange, in order.
    """

    exchanges: int = 0
    bytes_down: dict[str, int] = field(default_factory=dict)
    bytes_up: dict[str, int] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)


class GridLink:
    """The server's side of the Flower transport: one exchange per protocol stage.

    Args:
        grid: the ServerApp's Flower ``Grid``.
        nodes: party name → Flower node id (learnt from the sites' hello replies).
        ttl_s: Flower time-to-live of each message (at least the stage timeout).
        poll_s: how often replies are pulled while a stage is open.
        side_channels: with ``fixed_deadlines`` every exchange lasts its full timeout (it
            never returns early because everybody answered) and the replies come back in
            canonical-then-CSPRNG-shuffled order (the order of the returned dict), so a
            server that handles them in that order acts on nothing arrival could set.
    """

    def __init__(
        self,
        grid: Any,
        nodes: Mapping[str, int],
        ttl_s: float | None = None,
        poll_s: float = 0.05,
        side_channels: SideChannels = OFF,
    ) -> None:
        self.grid = grid
        self.poll_s = float(poll_s)
        self.nodes = dict(nodes)
        self.ttl_s = ttl_s
        self.stats = ExchangeStats()
        self.side_channels = side_channels

    def exchange(
        self, outgoing: Mapping[str, Envelope], timeout_s: float
    ) -> dict[str, Envelope]:
        """Send each party its envelope; return the replies that came back in time.

        A party that does not answer within ``timeout_s``, answers with a Flower error (its
        ClientApp failed) or with something that is not a veil message is absent from the
        result: silent for this stage, as the protocols expect.

        Raises:
            LocalError: a party name has no Flower node.
        """
        from flwr.app import Message

        unknown = sorted(set(outgoing) - set(self.nodes))
        if unknown:
            raise LocalError(f"no Flower node for parties {unknown}")
        by_node = {self.nodes[p]: p for p in outgoing}
        msgs = []
        for party, env in outgoing.items():
            ttl = max(float(self.ttl_s or 0.0), float(timeout_s) + 5.0)
            msgs.append(
                Message(
                    pack(env),
                    dst_node_id=self.nodes[party],
                    message_type=MESSAGE_TYPE,
                    ttl=ttl,
                    group_id=str(env.round),
                )
            )
            self.stats.bytes_down[party] = self.stats.bytes_down.get(party, 0) + len(env.payload)
        t0, start = time.perf_counter(), time.monotonic()
        replies = self._send_and_receive(msgs, float(timeout_s))
        out: dict[str, Envelope] = {}
        for msg in replies:
            who = by_node.get(int(msg.metadata.src_node_id))
            if who is None or msg.has_error():
                continue
            try:
                env = unpack(msg.content)
            except MalformedMessageError:
                continue
            out[who] = env
            self.stats.bytes_up[who] = self.stats.bytes_up.get(who, 0) + len(env.payload)
        if self.side_channels.fixed_deadlines:  # the stage ends at its deadline, always
            time.sleep(max(0.0, start + float(timeout_s) - time.monotonic()))
            out = dict(self.side_channels.order(list(out.items())))
        self.stats.exchanges += 1
        self.stats.seconds.append(time.perf_counter() - t0)
        return out

    def _send_and_receive(self, msgs: list[Any], timeout_s: float) -> list[Any]:
        """Push, then pull replies every ``poll_s`` until all arrived or the deadline.

        ``Grid.send_and_receive`` sleeps 3 s between pulls; a stage exchange would pay up
        to that on every stage, so veil polls the same Grid API more often.
        """
        if not hasattr(self.grid, "push_messages"):  # a Grid without the low-level API
            return list(self.grid.send_and_receive(msgs, timeout=timeout_s))
        pending = set(self.grid.push_messages(msgs))
        end = time.monotonic() + timeout_s
        got: list[Any] = []
        while pending:
            res = list(self.grid.pull_messages(pending))
            got.extend(res)
            pending.difference_update(m.metadata.reply_to_message_id for m in res)
            if not pending or time.monotonic() >= end:
                break
            time.sleep(self.poll_s)
        return got
