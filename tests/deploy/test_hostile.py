"""A hostile coordinator tries to make the sites run a weaker round than their own config.

Each site builds its run from its *own* copy of the run config; the coordinator's
messages only carry what the protocol needs (parameters, the stages' public broadcast
state, SecAgg+'s graph seed and session). The adversary here is a coordinator that
sends, in real Flower messages through :class:`FakeGrid`, a config without DP, a clip
norm that clips nothing, a SecAgg+ cohort of two (the site's update = sum − the
adversary's own), a threshold of one, a cohort size that shrinks each site's share of
distributed noise, or a replayed round. Every attack must fail: the site refuses, sends no
update (no row, no SecAgg+ input) and does not spend privacy budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the Flower transport needs the flower extra")

from tests.deploy.configs import site_configs, write_config  # noqa: E402
from tests.deploy.fakegrid import FakeGrid  # noqa: E402
from veil.deploy.server import DeployServer  # noqa: E402
from veil.deploy.site import state_to_meta  # noqa: E402
from veil.errors import AbortError  # noqa: E402
from veil.federation import load_config  # noqa: E402
from veil.transport.flower import Envelope  # noqa: E402


def _connected(cfg: Path, tmp: Path, sites: int = 3) -> tuple[DeployServer, Any, FakeGrid]:
    grid = FakeGrid(site_configs(cfg, sites))
    srv = DeployServer(load_config(cfg), tmp / "run", stage_timeout_s=5.0)
    return srv, srv.connect(grid), grid


def _train(srv: DeployServer, r: int = 0, **meta: Any) -> Envelope:
    base = {"cohort_size": srv.server.cohort_size,
            "pipeline_state": state_to_meta(srv.server.broadcast())}
    base.update(meta)
    return Envelope("train", r, srv.params.numpy().astype(np.float32).tobytes(), base)


def _assert_refused(replies: dict[str, Envelope], grid: FakeGrid, what: str) -> None:
    assert replies, "the sites answered"
    for env in replies.values():
        assert env.kind == "error" and env.meta["error"] == "ConfigError", env
        assert what in env.meta["message"]
        assert env.payload == b""  # nothing of the site's update
    for _, (_, agent) in grid.nodes.items():
        site = agent.site.site
        assert site.ledger is None or site.ledger.epsilon() == 0.0  # no budget spent


def test_a_coordinator_without_the_sites_dp_is_refused_at_hello(tmp_path: Path) -> None:
    sites_cfg = write_config(tmp_path / "site.toml", "dp", client="central")
    hostile = write_config(tmp_path / "hostile.toml", "dp")  # same run, privacy off
    grid = FakeGrid(site_configs(sites_cfg))
    with pytest.raises(AbortError, match="0 of 3 sites ready"):
        DeployServer(load_config(hostile), tmp_path / "run").run(grid)
    assert {kind for _, kind, _, _ in grid.seen} == {"error"}
    assert all(payload == b"" for _, _, payload, _ in grid.seen)
    assert "privacy" in grid.seen[0][3]  # the refusal names the differing keys


def test_a_clip_norm_that_clips_nothing_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cdp.toml", "cdp", client="central")
    srv, link, grid = _connected(cfg, tmp_path)
    env = _train(srv, pipeline_state=[{"clip_norm": 1e9}])  # the config says 0.5
    _assert_refused(link.exchange({p: env for p in link.nodes}, 5.0), grid, "clip")
    honest = link.exchange({p: _train(srv) for p in link.nodes}, 5.0)
    assert {e.kind for e in honest.values()} == {"row"}  # the honest round goes through


def test_a_secagg_cohort_of_two_is_refused(tmp_path: Path) -> None:
    # with {0, adversary}, the sum minus the adversary's own input is site 0's update
    cfg = write_config(tmp_path / "sa.toml", "sa", secagg=True)
    srv, link, grid = _connected(cfg, tmp_path)
    party_meta: dict[str, Any] = {}
    srv._secagg_party(np.asarray([0, 1, 2]), 0, party_meta)
    two = dict(party_meta["secagg"], site_ids=[0, 1], k=1, t=1)
    replies = link.exchange({"0": _train(srv, secagg=two)}, 5.0)
    _assert_refused(replies, grid, "cohort size")


def test_a_lowered_threshold_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "sa.toml", "sa", secagg=True, sites=5, k=4)
    srv, link, grid = _connected(cfg, tmp_path, sites=5)
    meta: dict[str, Any] = {}
    srv._secagg_party(np.arange(5), 0, meta)
    weak = dict(meta["secagg"], t=1)  # one share would rebuild a site's mask key
    _assert_refused(link.exchange({p: _train(srv, secagg=weak) for p in link.nodes}, 5.0),
                    grid, "secagg t")


def test_a_larger_claimed_cohort_does_not_shrink_distributed_noise(tmp_path: Path) -> None:
    # each site's share of the discrete Gaussian noise is sized for the configured cohort:
    # a coordinator claiming 300 sites would have each add 1/10 of the noise it must
    cfg = write_config(tmp_path / "ddp.toml", "ddp", client="distributed", secagg=True)
    srv, link, grid = _connected(cfg, tmp_path)
    meta: dict[str, Any] = {}
    srv._secagg_party(np.arange(3), 0, meta)
    env = _train(srv, cohort_size=300, secagg=meta["secagg"])
    _assert_refused(link.exchange({p: env for p in link.nodes}, 5.0), grid, "cohort_size")


def test_a_replayed_round_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "plain.toml", "plain")
    srv, link, grid = _connected(cfg, tmp_path)
    first = link.exchange({p: _train(srv) for p in link.nodes}, 5.0)
    assert {e.kind for e in first.values()} == {"row"}
    # the same round again would give the coordinator a second update from the same
    # starting point (and, under DP, spend the site's budget twice)
    _assert_refused(link.exchange({p: _train(srv) for p in link.nodes}, 5.0), grid, "round")
