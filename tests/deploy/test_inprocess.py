"""The deployed rounds against the simulation, with Flower's messages but no processes.

:class:`FakeGrid` answers each Flower message with a site agent in this process, so the
server's rounds, the envelope codec, the sites' runtimes and the SecAgg+ machines run as
deployed. The final model must equal the simulation of the same config and seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the Flower transport needs the flower extra")

from tests.deploy.configs import site_configs, write_config  # noqa: E402
from tests.deploy.fakegrid import FakeGrid  # noqa: E402
from veil.deploy.server import DeployServer  # noqa: E402
from veil.errors import AbortError  # noqa: E402
from veil.federation import build_federation, load_config  # noqa: E402


def _simulate(path: Path) -> tuple[np.ndarray, dict]:
    res = build_federation(load_config(path)).run()
    return res.params.numpy(), res.summary


def _deploy(path: Path, grid: FakeGrid, out: Path) -> tuple[DeployServer, dict]:
    srv = DeployServer(load_config(path), out, stage_timeout_s=5.0)
    return srv, srv.run(grid)


def test_plain_fedavg_equals_simulation_when_counts_are_shared(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "plain.toml", "plain")
    srv, rec = _deploy(cfg, FakeGrid(site_configs(cfg, share_counts=True)), tmp_path / "run")
    np.testing.assert_allclose(srv.params.numpy(), _simulate(cfg)[0], rtol=0, atol=1e-6)
    assert rec["final"]["status"] == "completed"
    assert sorted(rec["example_counts_shared"]) == ["0", "1", "2"]


def test_no_example_count_leaves_a_site_unless_opted_in(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "plain.toml", "plain")
    grid = FakeGrid(site_configs(cfg))
    srv, rec = _deploy(cfg, grid, tmp_path / "run")
    assert rec["example_counts_shared"] == {}
    sizes = {s.site.site.n_examples for _, (_, s) in grid.nodes.items()}
    for _, kind, payload, meta in grid.seen:
        assert "n_examples" not in meta
        if kind == "row":  # WeightedMean's weight column is 1, not the site's size
            assert np.frombuffer(payload, np.float64)[-1] == 1.0
            assert not sizes & {int(np.frombuffer(payload, np.float64)[-1])}


def test_secagg_equals_simulation(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "sa.toml", "sa", secagg=True)
    srv, rec = _deploy(cfg, FakeGrid(site_configs(cfg)), tmp_path / "run")
    # stochastic rounding to 32 bits over [-4, 4]: |error| <= 3 sites * 8 / 2^32 per weight
    np.testing.assert_allclose(srv.params.numpy(), _simulate(cfg)[0], rtol=0, atol=1e-6)
    # one exchange per protocol stage: train+advertise, share, masked, consistency, unmask
    assert all(len(r["exchange_s"]) == 5 for r in rec["rounds"])
    # bytes per round, not cumulative: both rounds carry the same protocol traffic
    b0, b1 = (r["bytes_up"] for r in rec["rounds"])
    assert set(b0) == {"0", "1", "2"} and b0 == b1


def test_client_level_central_dp_equals_simulation(tmp_path: Path) -> None:
    # DP-FedAvg: clipped at the sites, Gaussian noise added by the coordinator's Server
    # (seed-derived streams, privacy.secure_rng = false), the client-level ledger at the
    # coordinator: the same model and the same ε as in simulation
    cfg = write_config(tmp_path / "cdp.toml", "cdp", client="central")
    srv, rec = _deploy(cfg, FakeGrid(site_configs(cfg)), tmp_path / "run")
    params, summary = _simulate(cfg)
    np.testing.assert_allclose(srv.params.numpy(), params, rtol=0, atol=1e-6)
    assert rec["privacy"]["epsilon_client"] == pytest.approx(summary["epsilon_client"], rel=1e-9)
    assert 0 < rec["privacy"]["epsilon_client"] <= 8.0
    # hidden cohorts (record_cohorts = false): the record keeps counts only
    assert all("cohort" not in r and "survivors" not in r for r in rec["rounds"])
    assert all(r["n_summed"] == 3 for r in rec["rounds"])


def test_distributed_dp_under_secagg_equals_simulation(tmp_path: Path) -> None:
    # each site adds its share of discrete Gaussian noise before SecAgg+ (its own seeded
    # stream); the coordinator only ever holds the noised sum
    cfg = write_config(tmp_path / "ddp.toml", "ddp", client="distributed", secagg=True)
    srv, rec = _deploy(cfg, FakeGrid(site_configs(cfg)), tmp_path / "run")
    params, summary = _simulate(cfg)
    np.testing.assert_array_equal(srv.params.numpy(), params)  # integer sums: bit-equal
    assert rec["privacy"]["epsilon_client"] == pytest.approx(summary["epsilon_client"], rel=1e-9)
    assert rec["pipeline"] == ["clip", "uniform_mean", "quantize", "distributed_dp", "secagg"]


def test_secagg_recovers_from_a_site_lost_mid_round(tmp_path: Path) -> None:
    # 4 sites, k = 3, t = 2: every secret keeps >= 2 share holders when one site is lost
    cfg = write_config(tmp_path / "sa.toml", "sa", secagg=True, rounds=1, sites=4, k=3)
    grid = FakeGrid(site_configs(cfg, 4))
    grid.answers_left[1003] = 3  # hello, train+advertise, share; silent from 'masked' on
    srv, rec = _deploy(cfg, grid, tmp_path / "run")
    assert rec["rounds"][0]["survivors"] == [0, 1, 2]
    assert rec["final"]["status"] == "completed"


def test_below_threshold_aborts_with_the_typed_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "sa.toml", "sa", secagg=True, rounds=1)
    grid = FakeGrid(site_configs(cfg))
    grid.answers_left[1001] = 2
    grid.answers_left[1002] = 2  # both lost after advertising: 1 of 3 left, t = 2
    with pytest.raises(AbortError, match="threshold"):
        _deploy(cfg, grid, tmp_path / "run")
    rec = json.loads((tmp_path / "run" / "record.json").read_text())
    assert rec["final"]["status"] == "aborted"
    assert "AbortError" in rec["rounds"][0]["aborted"]


@pytest.mark.slow
def test_dp_sgd_is_accounted_at_the_sites(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "dp.toml", "dp", dp=True)
    srv, rec = _deploy(cfg, FakeGrid(site_configs(cfg)), tmp_path / "run")
    params, summary = _simulate(cfg)
    np.testing.assert_allclose(srv.params.numpy(), params, rtol=0, atol=1e-6)
    sim_eps = {str(k): v for k, v in summary["epsilon_sample_per_site"].items()}
    got = rec["privacy"]["epsilon_reported_per_site"]
    assert got.keys() == sim_eps.keys()
    for s, e in got.items():
        assert 0 < e <= 8.0
        assert e == pytest.approx(sim_eps[s], rel=1e-9)


def _poisson_deploy(tmp_path: Path, name: str, sites: int, debug: bool) -> dict:
    cfg = write_config(tmp_path / f"{name}.toml", name, rounds=3, sites=sites, client="central")
    text = cfg.read_text().replace(
        'transport = "flower"\n',
        'transport = "flower"\nsampling = "poisson"\ncohort_fraction = 0.5\n')
    if debug:
        text = text.replace("secure_rng = false\n",
                            "secure_rng = false\ndebug_unnoised_statistics = true\n")
    cfg.write_text(text)
    grid = FakeGrid(site_configs(cfg, sites))
    srv = DeployServer(load_config(cfg), tmp_path / f"run-{name}", stage_timeout_s=5.0,
                       min_nodes=sites)
    return srv.run(grid)


def _unnoised(rec: dict) -> tuple[list[dict], dict]:
    """What a reader of record.json compares: every field that is not noised."""
    from veil.privacy.release import DP_STAGES

    rounds = []
    for r in rec["rounds"]:
        v = {k: x for k, x in r.items() if k not in ("test_loss", "test_accuracy")}
        v["measurements"] = {k: x for k, x in (r.get("measurements") or {}).items()
                             if k.split("/", 1)[0] not in DP_STAGES}
        rounds.append(v)
    final = {k: x for k, x in rec["final"].items() if k != "test_accuracy"}
    return rounds, final


def test_hidden_poisson_cohorts_leave_no_count_in_the_deployed_record(tmp_path: Path) -> None:
    # add/remove-one-site neighbours: deployment B is A without its last site. Under
    # client-level DP with hidden Poisson cohorts the record's un-noised fields must not
    # tell them apart (no n_selected/n_summed, timings, exchange counts)
    a = _poisson_deploy(tmp_path, "a", 4, debug=False)
    b = _poisson_deploy(tmp_path, "b", 3, debug=False)
    assert _unnoised(a) == _unnoised(b)
    for r in a["rounds"]:
        assert not {"n_selected", "n_summed", "duration_s", "exchange_s"} & set(r)
    assert "exchanges" not in a["final"] and "wall_s" not in a["final"]
    # control: with the un-noised debug flag the same reader tells them apart
    ad = _poisson_deploy(tmp_path, "ad", 4, debug=True)
    bd = _poisson_deploy(tmp_path, "bd", 3, debug=True)
    assert _unnoised(ad)[0] != _unnoised(bd)[0]
    assert any("n_selected" in r for r in ad["rounds"])


def _stage_certs(tmp_path: Path, sites: int) -> tuple[Any, list[dict]]:
    from veil.deploy.stagelink import StageLinkConfig, write_stage_certs

    files = write_stage_certs(tmp_path / "stage", sites)
    link = StageLinkConfig(("127.0.0.1", 0), "127.0.0.1:0", files["coordinator"],
                           files["coordinator-key"], files["ca"])
    extra = [{"stage-cert": str(files[f"site-{i}"]), "stage-key": str(files[f"site-{i}-key"]),
              "stage-ca": str(files["ca"])} for i in range(sites)]
    return link, extra


def test_secagg_over_the_stage_link_equals_simulation(tmp_path: Path) -> None:
    # Flower carries hello and train (+ advertise); share, masked, consistency and unmask
    # go over the coordinator's mutual-TLS stage link: the same model as in simulation
    cfg = write_config(tmp_path / "sl.toml", "sl", secagg=True)
    link, extra = _stage_certs(tmp_path, 3)
    grid = FakeGrid([{**nc, **x} for nc, x in zip(site_configs(cfg), extra)])
    srv = DeployServer(load_config(cfg), tmp_path / "run", stage_timeout_s=5.0,
                       stage_link=link)
    rec = srv.run(grid)
    np.testing.assert_allclose(srv.params.numpy(), _simulate(cfg)[0], rtol=0, atol=1e-6)
    assert all(len(r["exchange_s"]) == 5 for r in rec["rounds"])
    assert "stage link" in rec["stage_transport"]
    # Flower saw only hello and train: no protocol stage travelled as a Flower message
    assert {kind for _, kind, _, _ in grid.seen} == {"hello", "stage"}
    assert len(grid.seen) == 3 * (1 + rec["final"]["rounds_completed"])
    assert set(rec["rounds"][0]["bytes_up"]) == {"0", "1", "2"}


def test_a_site_without_stage_certificates_refuses_and_the_round_goes_on(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path / "sl.toml", "sl", secagg=True, sites=4, k=3)
    link, extra = _stage_certs(tmp_path, 4)
    extra[3] = {}  # site 3 was given no stage certificate
    grid = FakeGrid([{**nc, **x} for nc, x in zip(site_configs(cfg, 4), extra)])
    srv = DeployServer(load_config(cfg), tmp_path / "run", stage_timeout_s=5.0,
                       min_nodes=3, stage_link=link)
    rec = srv.run(grid)
    assert rec["sites"] == ["0", "1", "2"]
    (why,) = rec["site_refusals"].values()
    assert "stage-cert" in why
    assert rec["final"]["status"] == "completed"


def test_fixed_deadlines_and_shuffled_order_over_the_stage_link(tmp_path: Path) -> None:
    # side channels in a deployment: with fixed deadlines every protocol stage lasts its
    # deadline, the server handles replies in a CSPRNG-shuffled order, and the sites add
    # their random delays; the round is still exact
    import time

    cfg = write_config(tmp_path / "sc.toml", "sc", secagg=True, rounds=1)
    text = cfg.read_text().replace(
        "neighbours = 2\n", "neighbours = 2\nfixed_deadlines = true\nstage_deadline_s = 0.6\n"
        "site_delay_s = 0.2\npad_messages = true\n")
    cfg.write_text(text)
    link, extra = _stage_certs(tmp_path, 3)
    grid = FakeGrid([{**nc, **x} for nc, x in zip(site_configs(cfg), extra)])
    srv = DeployServer(load_config(cfg), tmp_path / "run", stage_timeout_s=5.0,
                       stage_link=link)
    assert srv.stage_timeout_s == 0.6 and srv.side_channels.fixed_deadlines
    t0 = time.perf_counter()
    rec = srv.run(grid)
    (r,) = rec["rounds"]
    assert rec["final"]["status"] == "completed"
    stages = r["exchange_s"][1:]  # the four stages over the link
    assert len(stages) == 4 and all(x >= 0.6 for x in stages)  # none closed early
    assert all(x < 0.6 + 0.5 for x in stages)  # and none waited for more than its deadline
    np.testing.assert_allclose(srv.params.numpy(), _simulate(cfg)[0], rtol=0, atol=1e-6)
    assert time.perf_counter() - t0 > 4 * 0.6


def test_a_coordinator_cannot_train_a_site_over_the_stage_link(tmp_path: Path) -> None:
    # the link carries protocol stages only: a hostile coordinator that sends the model
    # (a "train" message, which would spend the site's budget) over it gets a refusal
    from veil.transport.flower import Envelope

    cfg = write_config(tmp_path / "sl.toml", "sl", secagg=True, dp=True)
    link, extra = _stage_certs(tmp_path, 3)
    grid = FakeGrid([{**nc, **x} for nc, x in zip(site_configs(cfg), extra)])
    srv = DeployServer(load_config(cfg), tmp_path / "run", stage_timeout_s=5.0,
                       stage_link=link)
    try:
        srv.connect(grid)
        params = srv.params.numpy().astype(np.float32).tobytes()
        replies = srv.stage.exchange({"0": Envelope("train", 0, params, {})}, 5.0)
        agent = next(a for _, a in grid.nodes.values() if a.site.site_id == 0)
        run_before, site_before = agent.run_id, agent.site
        # a hello over the link (it would start a new run with the coordinator's config)
        hello = srv.stage.exchange({"0": Envelope("hello", 0, b"", {"config": {}})}, 5.0)
    finally:
        srv.stage.close()
    assert replies["0"].kind == "error" and replies["0"].meta["error"] == "ProtocolError"
    site = next(a.site for _, a in grid.nodes.values() if a.site.site_id == 0)
    assert site.last_round == -1 and site.site.ledger.epsilon() == 0.0  # nothing spent
    assert hello["0"].kind == "error" and hello["0"].meta["error"] == "ProtocolError"
    assert agent.run_id == run_before and agent.site is site_before  # no new run started
