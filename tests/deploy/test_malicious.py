"""SecAgg+'s malicious-server mode over Flower's messages: enrolled sites, a pinned roster.

Each site holds its own Ed25519 identity (``identity`` in its node config) and the roster
(``roster``); the coordinator holds only the roster. Rounds sign advertisements and
survivor lists; the sum is the same as in the semi-honest simulation of the config. A
coordinator that drops the roster (to run the weaker semi-honest mode) or substitutes a
site's key (a Sybil it controls) must get nothing from any enrolled site.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the Flower transport needs the flower extra")

from tests.deploy.configs import site_configs, write_config  # noqa: E402
from tests.deploy.fakegrid import FakeGrid  # noqa: E402
from veil.crypto.identity import Roster, SiteIdentity  # noqa: E402
from veil.deploy.server import DeployServer  # noqa: E402
from veil.errors import AbortError  # noqa: E402
from veil.federation import build_federation, load_config  # noqa: E402


def _enrol(tmp: Path, cfg: Path, sites: int) -> tuple[Roster, list[dict[str, Any]]]:
    ids = [SiteIdentity.generate(i) for i in range(sites)]
    roster = Roster.of("veil-test", ids)
    (tmp / "roster.json").write_text(roster.to_json())
    nodes = site_configs(cfg, sites)
    for i, (nc, ident) in enumerate(zip(nodes, ids)):
        key, _ = ident.save(tmp / f"site{i}")
        nc.update(roster=str(tmp / "roster.json"), identity=str(key),
                  **{"roster-digest": roster.digest().hex()})
    return roster, nodes


def test_enrolled_sites_run_the_malicious_mode_and_equal_the_simulation(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "sa.toml", "sa", secagg=True, sites=4, k=3)
    roster, nodes = _enrol(tmp_path, cfg, 4)
    grid = FakeGrid(nodes)
    srv = DeployServer(load_config(cfg), tmp_path / "run", stage_timeout_s=5.0, roster=roster)
    rec = srv.run(grid)
    assert rec["threat_model"].startswith("malicious server")
    assert rec["final"]["status"] == "completed"
    assert all(r["survivors"] == [0, 1, 2, 3] for r in rec["rounds"])
    # the sum mod 2^32 does not depend on the mode: the simulation's model, within rounding
    sim = build_federation(load_config(cfg)).run()
    np.testing.assert_allclose(srv.params.numpy(), sim.params.numpy(), rtol=0, atol=1e-6)


def _attack(tmp: Path, roster: Roster | None) -> FakeGrid:
    cfg = write_config(tmp / "sa.toml", "sa", secagg=True, rounds=1, sites=4, k=3)
    _, nodes = _enrol(tmp, cfg, 4)
    grid = FakeGrid(nodes)
    srv = DeployServer(load_config(cfg), tmp / "run", stage_timeout_s=5.0, roster=roster)
    with pytest.raises(AbortError, match="no site|threshold|SecAgg"):
        srv.run(grid)
    return grid


def _nothing_left_the_sites(grid: FakeGrid) -> None:
    sent = [(kind, payload, meta) for _, kind, payload, meta in grid.seen]
    assert all(kind in ("hello", "error") for kind, _, _ in sent)  # no stage message
    assert all(payload == b"" for _, payload, _ in sent)
    assert any("secagg roster" in meta for _, _, meta in sent)


def test_a_coordinator_without_the_roster_gets_nothing(tmp_path: Path) -> None:
    _nothing_left_the_sites(_attack(tmp_path, roster=None))  # semi-honest mode refused


def test_a_substituted_key_gets_nothing(tmp_path: Path) -> None:
    sybil = [SiteIdentity.generate(i) for i in range(4)]  # keys the coordinator holds
    _nothing_left_the_sites(_attack(tmp_path, Roster.of("veil-test", sybil)))
