"""veil runs on a real Flower SuperLink and SuperNodes (OS processes on loopback).

The fast test (default suite) runs a plain FedAvg round on one shared three-site
deployment and compares the final model with the simulation of the same config and seed;
the slow ones reuse that deployment for SecAgg+, client-level DP and DP-SGD accounted at
the sites, and start their own for TLS from generated certificates and for a SuperNode
killed mid-round.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.deploy.configs import site_configs, write_config
from veil.errors import AbortError
from veil.federation import build_federation, load_config

RUN_TIMEOUT_S = 600


def _simulate(cfg: Path) -> Any:
    return build_federation(load_config(cfg)).run()


def _model(out: Path) -> np.ndarray:
    return torch.load(out / "model.pt", weights_only=True)["params"].numpy()


def _no_leftovers(dep: Any) -> None:
    agents = [int(p.read_text()) for p in dep._agents.glob("n*/agent.pid")]
    assert agents, "the site agents wrote their PIDs"
    dep.stop()
    procs = [dep.superlink, *dep.supernodes]
    assert not any(p.alive() for p in procs)
    for pid in agents:
        assert _gone(pid), f"site agent {pid} still runs"


def _gone(pid: int, wait_s: float = 10.0) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait_s:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def _run_shared(dep: Any, tmp: Path, stage_link: bool = False,
                **kw: Any) -> tuple[Path, str, dict[str, Any]]:
    cfg = write_config(dep.config, tmp.name, **kw)  # every site's own copy, too
    status, rec = dep.run(cfg, tmp / "run", stage_timeout_s=90, timeout_s=RUN_TIMEOUT_S,
                          stage_link=stage_link)
    return cfg, status, rec


def test_fedavg_round_over_flower_equals_simulation(
    shared_deployment: Any, tmp_path: Path
) -> None:
    # the default suite's end-to-end test: one plain round (one exchange after the hello)
    # on real processes; SecAgg+ and DP over the same messages run in process in
    # test_inprocess.py and on real processes in the slow tests below
    cfg, status, rec = _run_shared(shared_deployment, tmp_path, rounds=1)
    assert status == "finished:completed"
    assert rec["transport"] == "flower" and rec["final"]["status"] == "completed"
    assert rec["rounds"][0]["survivors"] == [0, 1, 2]
    assert len(rec["rounds"][0]["exchange_s"]) == 1
    # without shared counts the sites are weighted equally (the simulation weights by size)
    sim = build_federation(load_config(cfg, {"aggregation.weighted": False})).run()
    np.testing.assert_allclose(_model(tmp_path / "run"), sim.params.numpy(), rtol=0, atol=1e-6)
    for agent in shared_deployment._agents.glob("n*/agent.pid"):
        assert int(agent.read_text()) > 0  # each site's executor is up (stopped by PID)


@pytest.mark.slow
def test_secagg_round_over_flower_equals_simulation(
    shared_deployment: Any, tmp_path: Path
) -> None:
    cfg, status, rec = _run_shared(shared_deployment, tmp_path, secagg=True, rounds=1)
    assert status == "finished:completed"
    assert rec["transport"] == "flower" and rec["final"]["status"] == "completed"
    assert rec["rounds"][0]["survivors"] == [0, 1, 2]
    assert len(rec["rounds"][0]["exchange_s"]) == 5  # one exchange per SecAgg+ stage
    # 32-bit stochastic rounding over [-4, 4]: |error| <= 3 * 8 / 2^32 per weight
    np.testing.assert_allclose(_model(tmp_path / "run"), _simulate(cfg).params.numpy(),
                               rtol=0, atol=1e-6)
    assert rec["example_counts_shared"] == {}


@pytest.mark.slow
def test_secagg_over_the_stage_link_on_real_processes_equals_simulation(
    shared_deployment: Any, tmp_path: Path
) -> None:
    # the site executors dial the coordinator's mutual-TLS port; stages 2-5 go over it
    cfg, status, rec = _run_shared(shared_deployment, tmp_path, secagg=True, rounds=2,
                                   stage_link=True)
    assert status == "finished:completed" and rec["final"]["status"] == "completed"
    assert "stage link" in rec["stage_transport"]
    assert all(r["survivors"] == [0, 1, 2] and len(r["exchange_s"]) == 5
               for r in rec["rounds"])
    np.testing.assert_allclose(_model(tmp_path / "run"), _simulate(cfg).params.numpy(),
                               rtol=0, atol=1e-6)


@pytest.mark.slow
def test_client_level_dp_over_flower_equals_simulation(
    shared_deployment: Any, tmp_path: Path
) -> None:
    cfg, status, rec = _run_shared(shared_deployment, tmp_path, client="central", rounds=2)
    sim = _simulate(cfg)
    np.testing.assert_allclose(_model(tmp_path / "run"), sim.params.numpy(), rtol=0, atol=1e-6)
    assert rec["privacy"]["epsilon_client"] == pytest.approx(sim.summary["epsilon_client"])


@pytest.mark.slow
def test_dp_sgd_over_flower_sites_report_epsilon(shared_deployment: Any, tmp_path: Path) -> None:
    cfg, status, rec = _run_shared(shared_deployment, tmp_path, dp=True, secagg=True)
    sim = _simulate(cfg)
    np.testing.assert_allclose(_model(tmp_path / "run"), sim.params.numpy(), rtol=0, atol=1e-6)
    want = {str(k): v for k, v in sim.summary["epsilon_sample_per_site"].items()}
    got = rec["privacy"]["epsilon_reported_per_site"]
    assert got.keys() == want.keys()
    for s in got:
        assert got[s] == pytest.approx(want[s], rel=1e-9)
    assert all(set(r["epsilon_reported"]) == {"0", "1", "2"} for r in rec["rounds"])


@pytest.mark.slow
def test_tls_from_generated_certificates(deployment: Any, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "plain.toml", "plain", rounds=1)
    dep = deployment(site_configs(cfg, share_counts=True), tls=True)
    assert "--insecure" not in dep.superlink.popen.args
    status, rec = dep.run(cfg, tmp_path / "run", timeout_s=RUN_TIMEOUT_S)
    assert status == "finished:completed" and rec["rounds"][0]["survivors"] == [0, 1, 2]
    assert "Starting insecure" not in dep.supernodes[0].log_tail(100_000)
    np.testing.assert_allclose(_model(tmp_path / "run"), _simulate(cfg).params.numpy(),
                               rtol=0, atol=1e-6)
    _no_leftovers(dep)


def _kill_when(dep: Any, site: int, messages: int) -> threading.Thread:
    """Crash SuperNode ``site`` (SIGKILL) once it has received ``messages`` veil messages
    (1 = hello, 2 = train + advertise, 3 = share, 4 = masked, 5 = consistency...)."""

    def watch() -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < RUN_TIMEOUT_S:
            log = dep.supernodes[site].log_tail(10**7)
            if log.count("Receiving: query.veil") >= messages:
                dep.kill_site(site)
                return
            time.sleep(0.1)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    return th


@pytest.mark.slow
def test_supernode_killed_mid_round_is_recovered(deployment: Any, tmp_path: Path) -> None:
    # 4 sites, k = 3, t = 2: losing one site after it sent its masked input is recovered
    cfg = write_config(tmp_path / "sa.toml", "sa", secagg=True, rounds=1, sites=4, k=3)
    dep = deployment(site_configs(cfg, 4))
    # killed when the consistency check reaches it: its masked input is already in
    th = _kill_when(dep, site=3, messages=5)
    status, rec = dep.run(cfg, tmp_path / "run", stage_timeout_s=30, timeout_s=RUN_TIMEOUT_S)
    th.join(5)
    assert not dep.supernodes[3].alive()
    assert status == "finished:completed"
    assert rec["rounds"][0]["survivors"] == [0, 1, 2, 3]  # its masked input is in the sum
    sim = _simulate(cfg)
    np.testing.assert_allclose(_model(tmp_path / "run"), sim.params.numpy(), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_below_threshold_fails_the_run_with_the_typed_error(
    deployment: Any, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "sa.toml", "sa", secagg=True, rounds=1)  # 3 sites, t = 2
    dep = deployment(site_configs(cfg))
    ths = [_kill_when(dep, site=s, messages=2) for s in (1, 2)]
    t0 = time.monotonic()
    with pytest.raises(AbortError, match="threshold|sites ready|no site"):
        dep.run(cfg, tmp_path / "run", stage_timeout_s=20, timeout_s=RUN_TIMEOUT_S)
    assert time.monotonic() - t0 < RUN_TIMEOUT_S  # no hang
    for th in ths:
        th.join(5)
    rec = (tmp_path / "run" / "record.json").read_text()
    assert '"status": "aborted"' in rec and "AbortError" in rec


@pytest.mark.slow
def test_malicious_mode_on_real_supernodes_over_the_stage_link(tmp_path: Path) -> None:
    # enrolled sites (Ed25519 identities, a pinned roster) on real SuperNodes: signed
    # advertisements and survivor lists over Flower and the stage link; the same model
    pytest.importorskip("flwr", reason="needs the flower extra: pip install -e '.[flower]'")
    from tests.deploy.test_malicious import _enrol
    from veil.deploy import LocalDeployment

    cfg = write_config(tmp_path / "mal.toml", "mal", secagg=True, rounds=2, sites=4, k=3)
    _, nodes = _enrol(tmp_path, cfg, 4)
    with LocalDeployment(tmp_path / "dep", nodes, stage_link=True) as dep:
        status, rec = dep.run(cfg, tmp_path / "run", stage_timeout_s=90,
                              timeout_s=RUN_TIMEOUT_S, roster=tmp_path / "roster.json",
                              stage_link=True)
    assert status == "finished:completed" and rec["final"]["status"] == "completed"
    assert rec["threat_model"].startswith("malicious server")
    assert all(r["survivors"] == [0, 1, 2, 3] for r in rec["rounds"])
    np.testing.assert_allclose(_model(tmp_path / "run"), _simulate(cfg).params.numpy(),
                               rtol=0, atol=1e-6)
