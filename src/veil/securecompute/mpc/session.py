"""Private inference sessions: the model is shared once, then any number of batches.

:class:`MpcSession` runs the three compute parties as threads on an in-process network
(notebooks, tests) — the same party code that runs as OS processes over mutual TLS
(:mod:`veil.securecompute.mpc.processes`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from veil.errors import AbortError, PeerError
from veil.securecompute.mpc.net import CLIENT, PARTY_NAMES
from veil.securecompute.mpc.program import MpcConfig
from veil.securecompute.mpc.roles import Client, PhaseTimes, serve_party
from veil.transport.channel import InProcessNetwork

if TYPE_CHECKING:
    from veil.models.ir import Model

__all__ = ["MpcSession", "InferenceResult", "infer"]


@dataclass
class InferenceResult:
    """Output of one private inference and what it cost."""

    output: np.ndarray
    setup_s: float
    setup_bytes: int
    phases: PhaseTimes

    def summary(self) -> dict[str, Any]:
        p = self.phases
        return {"setup_s": self.setup_s, "input_s": p.input_s, "online_s": p.online_s,
                "reveal_s": p.reveal_s, "rounds": p.rounds, "bytes": p.bytes,
                "input_bytes": p.input_bytes, "reveal_bytes": p.reveal_bytes,
                "setup_bytes": self.setup_bytes}


class MpcSession:
    """Three in-process compute parties and a client holding ``model``.

    Use as a context manager; :meth:`infer` may be called many times (model shared once).

    Raises:
        AbortError: a party failed; the message names it (no result is released).
    """

    def __init__(self, model: Model, cfg: MpcConfig | None = None) -> None:
        self.model = model
        self.cfg = cfg or MpcConfig()
        self._net = InProcessNetwork((*PARTY_NAMES, CLIENT))
        self._errors: dict[str, BaseException] = {}
        self._threads: list[threading.Thread] = []
        self.client = Client(self._net[CLIENT], model, self.cfg)

    def __repr__(self) -> str:
        return f"MpcSession(model={self.model.name!r}, in-process)"

    def _party(self, name: str) -> None:
        try:
            serve_party(self._net[name], self.cfg)
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            self._errors[name] = e
        finally:
            self._net[name].close()

    def start(self) -> MpcSession:
        for name in PARTY_NAMES:
            t = threading.Thread(target=self._party, args=(name,), daemon=True)
            t.start()
            self._threads.append(t)
        self._guard(self.client.setup)
        return self

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (AbortError, PeerError):
            for t in self._threads:
                t.join(self.cfg.deadline_s)
            for name, e in self._errors.items():
                raise AbortError(f"party {name} failed: {type(e).__name__}: {e}") from None
            raise

    def infer(self, x: np.ndarray) -> InferenceResult:
        """Private inference on the batch ``x``."""
        y = self._guard(self.client.infer, x)
        assert self.client.last is not None
        return InferenceResult(y, self.client.setup_s, self.client.setup_bytes, self.client.last)

    def close(self) -> None:
        self.client.close()
        for t in self._threads:
            t.join(self.cfg.deadline_s)
        self._net[CLIENT].close()

    def __enter__(self) -> MpcSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def infer(model: Model, x: np.ndarray, cfg: MpcConfig | None = None) -> InferenceResult:
    """One private inference of ``model`` on ``x`` with three in-process parties."""
    with MpcSession(model, cfg) as s:
        return s.infer(x)
