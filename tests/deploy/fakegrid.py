"""A Flower Grid in one process: each node is a veil site agent answering directly.

The messages still travel as real Flower ``Message`` objects (packed and unpacked by
:mod:`veil.transport.flower`), so the codec and the server's rounds run as deployed; only
the network and Flower's processes are missing. ``silent`` nodes never answer (a crashed
SuperNode); ``silent_from`` makes a node stop answering at a given (round, exchange).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import Message
from flwr.supercore.task_identity import TaskIdentity

from veil.deploy.agent import _Agent, _env_header
from veil.transport.flower import pack, unpack


class FakeGrid:
    def __init__(self, node_configs: Iterable[Mapping[str, Any]], run_id: int = 7) -> None:
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = 0
        TaskIdentity.task_id = 1
        self.run_id = run_id
        self.nodes = {1000 + i: (dict(nc), _Agent()) for i, nc in enumerate(node_configs)}
        self.silent: set[int] = set()
        #: node id -> number of exchanges it still answers (then goes silent)
        self.answers_left: dict[int, int] = {}
        self.seen: list[tuple[int, str, bytes, str]] = []  # (node, kind, payload, meta json)

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(
        self, messages: Iterable[Any], *, timeout: float | None = None
    ) -> list[Any]:
        out = []
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            if node in self.silent:
                continue
            if node in self.answers_left:
                if self.answers_left[node] <= 0:
                    self.silent.add(node)
                    continue
                self.answers_left[node] -= 1
            nc, agent = self.nodes[node]
            env = unpack(msg.content)
            header = {"run_id": self.run_id, "node_config": nc, **_env_header(env)}
            res = agent.handle(header, env.payload)
            rep = Message(pack(res), reply_to=msg)
            import json

            self.seen.append((node, res.kind, res.payload, json.dumps(dict(res.meta))))
            out.append(rep)
        return out
