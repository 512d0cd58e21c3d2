"""A shared n-party harness for the SecAgg+ tests: inputs, the expected plain sum, and an
honest run of every site and the server up to a chosen stage, through the one in-process
driver (:func:`veil.transport.driver.drive`); h11-style test helpers."""

from __future__ import annotations

import numpy as np

from veil.protocols.secagg import SERVER, SecAggClient, SecAggConfig, SecAggServer, site_of
from veil.transport.driver import drive


def inputs_for(cfg: SecAggConfig, seed: int = 0) -> dict[int, np.ndarray]:
    gen = np.random.default_rng(seed)  # test data only; masks never use numpy's RNG
    hi = 2**63 if cfg.bits == 64 else 2**cfg.bits
    return {u: gen.integers(0, hi, cfg.dim, dtype=np.uint64) for u in cfg.site_ids}


def plain_sum(cfg: SecAggConfig, x: dict[int, np.ndarray], ids) -> np.ndarray:
    tot = np.zeros(cfg.dim, dtype=np.uint64)
    for u in ids:
        tot += x[u]
    return tot & np.uint64((1 << cfg.bits) - 1 if cfg.bits < 64 else 2**64 - 1)


def run_until(cfg: SecAggConfig, x, stop: str):
    """Honest run up to (not including) ``stop``; returns server, clients and their inbox
    (site id → the server's message that opens ``stop``; None for the first stage)."""
    server = SecAggServer(cfg)
    clients = {u: SecAggClient(cfg, u, x[u]) for u in cfg.site_ids}
    if stop == "advertise":
        return server, clients, None
    trace = drive([server, *clients.values()], until=stop)
    inbox = {site_of(to): data for sender, to, data in trace.undelivered if sender == SERVER}
    return server, clients, inbox


def reply(party, data: bytes, sender: str = SERVER) -> bytes:
    """Deliver one message and return the single reply the party queued."""
    party.receive(sender, data)
    (_, out), = party.outbox()
    return out

