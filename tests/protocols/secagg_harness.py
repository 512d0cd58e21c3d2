"""A shared n-party harness for the SecAgg+ tests: inputs, the expected plain sum, and an
honest run of every site and the server up to a chosen stage (h11-style test helpers)."""

from __future__ import annotations

import numpy as np

from veil.protocols.secagg import STAGES, SecAggClient, SecAggConfig, SecAggServer


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
    """Honest run up to (not including) ``stop``; returns server, clients and their inbox."""
    server = SecAggServer(cfg)
    clients = {u: SecAggClient(cfg, u, x[u]) for u in cfg.site_ids}
    inbox = None
    for stage in STAGES:
        if stage == stop:
            break
        for u, c in clients.items():
            server.receive(u, c.start() if inbox is None else c.receive(inbox[u]))
        inbox = server.close_stage()
    return server, clients, inbox
