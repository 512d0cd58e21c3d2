"""run_party over a Channel: a server's wall-clock stage deadline fires when a site never
answers; sites that hear nothing give up with PeerTimeoutError naming the silent peer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from veil.errors import PeerTimeoutError
from veil.protocols.secagg import SERVER, SecAggClient, SecAggConfig, SecAggServer, site_name
from veil.transport import InProcessNetwork
from veil.transport.loop import run_party


def test_server_closes_each_stage_at_its_deadline_without_a_silent_site() -> None:
    cfg = SecAggConfig(1, tuple(range(5)), 6, 16, 4, 3, bytes(32))
    x = {u: np.full(6, u + 1, dtype=np.uint64) for u in cfg.site_ids}
    net = InProcessNetwork([SERVER, *map(site_name, cfg.site_ids)])
    errors = []

    def site(u):  # site 4 is connected but never runs its party
        try:
            run_party(SecAggClient(cfg, u, x[u]), net[site_name(u)], idle_timeout_s=30)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=site, args=(u,), daemon=True) for u in range(4)]
    for t in threads:
        t.start()
    server = SecAggServer(cfg)
    t0 = time.monotonic()
    trace = run_party(server, net[SERVER], stage_deadline_s=0.4)
    elapsed = time.monotonic() - t0
    for t in threads:
        t.join(10)
    assert not errors
    assert server.result.survivors == (0, 1, 2, 3)
    assert np.array_equal(server.result.total, np.full(6, 10, dtype=np.uint64))
    # the first stage waited for site 4 until its deadline; later stages expect only the
    # sites still in the round, so they close as soon as all of them answered
    assert trace.stages[0][0] == "advertise" and 0.35 < trace.stages[0][1] < 5
    assert elapsed < 10


def test_a_site_that_hears_nothing_gives_up() -> None:
    cfg = SecAggConfig(1, (0, 1), 2, 8, 1, 1, bytes(32))
    net = InProcessNetwork([SERVER, "0", "1"])
    with pytest.raises(PeerTimeoutError):
        run_party(SecAggClient(cfg, 0, np.zeros(2, np.uint64)), net["0"], idle_timeout_s=0.05)
