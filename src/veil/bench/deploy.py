"""`veil bench deploy`: a SecAgg+ round over Flower on loopback, veil's vs Flower's own.

One SuperLink and ``sites`` SuperNodes (real OS processes on 127.0.0.1, started by
:class:`veil.deploy.LocalDeployment`; every SuperNode with its fixed waits capped at
0.05 s) serve, one after the other:

* **veil over Flower** (``isolation = "veil"``, the deployment default) — the run config
  below (digits, an MLP, SecAgg+ with b = 32 bits, k = n − 1 neighbours, t = ⌊k/2⌋ + 1),
  one Flower exchange per protocol stage, each site's messages answered by its long-lived
  site executor; the round time is each round's ``duration_s`` in the record (training,
  all five stages, decode);
* on a second deployment with Flower's ClientApp process per message
  (``isolation = "subprocess"``, which Flower's own app needs):
  **Flower's SecAgg+** — ``SecAggPlusWorkflow(num_shares=k+1, reconstruction_threshold=t)``
  with ``secaggplus_mod`` (benchmarks/peers/flower_deploy_app.py, Flower's default 32-bit
  modulus), the same vector length d; its sites' "training" is a seeded offset (no local
  work), and its plain FedAvg rounds are timed alongside (the transport's floor); round
  time from ``configure_fit`` to ``aggregate_fit`` — and **veil in the same per-message
  processes** (like for like: the protocol's share of the difference);
* **veil over Flower with the stage link** (:mod:`veil.deploy.stagelink`) on the same
  deployment: Flower carries hello and the training exchange, the four later SecAgg+
  stages go over the coordinator's mutual-TLS port;
* **veil in-process simulation** of the same config (``build_federation(...).run()``).

Reported: medians (Flower: after its first round of each kind), ratios from this one run,
the load average (the machine is shared), and ``targets_met``:
``veil_secagg_5x_faster_than_flower_secagg`` (Flower's SecAgg+ round / veil's ≥ 5, every
stage a Flower message) and ``veil_stage_link_secagg_5x_faster_than_flower_secagg`` (the
same with veil's stage link: not the same transport as Flower's, which is stated).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]

CONFIG = """
name = "bench-deploy"
seed = 0
rounds = {rounds}
output_dir = "{out}"

[data]
dataset = "digits"
sites = {sites}
partition = "iid"

[model]
name = "mlp"
hidden = [64]

[local]
epochs = 1
batch_size = 32
lr = 0.1

[federation]
transport = "flower"

[aggregation]
summation = "secagg"
bits = 32
quantize_range = 4.0
neighbours = {k}
"""


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _flower_secagg(dep: Any, tmp: Path, p: dict[str, Any]) -> dict[str, Any]:
    """Flower's SecAgg+ workflow on the deployment's processes."""
    from veil.bench._peers import repo_root
    from veil.deploy.runs import flwr_run, write_app
    from veil.errors import LocalError

    peers = repo_root() / "benchmarks" / "peers"
    if not (peers / "flower_deploy_app.py").exists():
        return {"status": f"{peers / 'flower_deploy_app.py'} not found (run from a checkout)"}
    out = tmp / "flower_times.json"
    params = dict(p, out=str(out))
    app = write_app(
        tmp / "flower-app",
        name="flower-secagg",
        modules={
            "flower_secagg.py": (peers / "flower_secagg.py").read_text(),
            "flower_deploy_app.py": (peers / "flower_deploy_app.py").read_text(),
            "params.json": json.dumps(params),
        },
        components=("flower_deploy_app:server", "flower_deploy_app:client"),
        run_config={},
    )
    t0 = time.perf_counter()
    try:
        _, status = flwr_run(dep.workdir / "superlink", app, {}, timeout_s=1800)
    except LocalError as exc:  # report it beside veil's numbers instead of losing them
        return {"status": f"failed: {exc}"[:600]}
    wall = time.perf_counter() - t0
    times = json.loads(out.read_text()) if out.exists() else {}
    sec, plain = times.get("secagg+", []), times.get("plain", [])
    return {
        "status": status,
        "wall_s": wall,
        "secagg_rounds_s": sec,
        "plain_rounds_s": plain,
        "secagg_round_s": _median(sec[1:] or sec),
        "plain_round_s": _median(plain[1:] or plain),
        "rounds_completed": len(sec),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Round times of veil's and Flower's SecAgg+ over Flower, and of veil's simulation.

    Args:
        quick: 3 sites and 2 rounds (default: 5 sites, 3 rounds).
    """
    import flwr

    from veil.bench._machine import machine_info
    from veil.deploy import LocalDeployment
    from veil.federation import build_federation, load_config
    from veil.models import n_parameters

    sites, rounds = (3, 2) if quick else (5, 3)
    k = sites - 1
    t = k // 2 + 1
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="veil-bd-") as td:
        tmp = Path(td)
        cfg_path = tmp / "bench.toml"
        cfg_path.write_text(CONFIG.format(rounds=rounds, out=tmp / "sim", sites=sites, k=k))
        cfg = load_config(cfg_path)
        fed = build_federation(cfg)
        dim = n_parameters(fed.model)
        t0 = time.perf_counter()
        fed.run()
        sim_wall = time.perf_counter() - t0
        sim_rounds = [float(r["duration_s"]) for r in fed.records]
        nodes = [{"dataset": "digits", "partition-id": i, "config": str(cfg_path)}
                 for i in range(sites)]
        with LocalDeployment(tmp / "dep", nodes, isolation="veil", stage_link=True) as dep:
            t0 = time.perf_counter()
            status, rec = dep.run(cfg_path, tmp / "run", stage_timeout_s=300, timeout_s=3600)
            veil_wall = time.perf_counter() - t0
            veil_rounds = [float(r["duration_s"]) for r in rec["rounds"]]
            exchanges = [x for r in rec["rounds"] for x in r["exchange_s"]]
            t0 = time.perf_counter()
            link_status, link_rec = dep.run(cfg_path, tmp / "run-link", stage_timeout_s=300,
                                            timeout_s=3600, stage_link=True)
            link_wall = time.perf_counter() - t0
            link_rounds = [float(r["duration_s"]) for r in link_rec["rounds"]]
            link_x = [r["exchange_s"] for r in link_rec["rounds"]]
        with LocalDeployment(tmp / "dep-sub", nodes, isolation="subprocess") as dep:
            flower = _flower_secagg(
                dep, tmp, {"sites": sites, "dim": dim, "k": k, "t": t, "rounds": rounds,
                           "timeout": 300.0},
            )
            _, rec_sub = dep.run(cfg_path, tmp / "run-sub", stage_timeout_s=300,
                                 timeout_s=3600)
            sub_rounds = [float(r["duration_s"]) for r in rec_sub["rounds"]]
    veil_round = _median(veil_rounds)
    link_round = _median(link_rounds)
    sim_round = _median(sim_rounds)
    fl = flower.get("secagg_round_s")
    ratio = fl / veil_round if fl and veil_round else None
    link_ratio = fl / link_round if fl and link_round else None
    sub_round = _median(sub_rounds)
    return {
        "framework": f"flwr {flwr.__version__}",
        "sites": sites,
        "dim": dim,
        "k": k,
        "t": t,
        "bits": 32,
        "rounds": rounds,
        "veil_flower_status": status,
        "veil_flower_rounds_s": veil_rounds,
        "veil_flower_round_s": veil_round,
        "veil_flower_exchange_median_s": _median(exchanges),
        "veil_flower_exchanges_per_round": len(exchanges) // max(1, len(veil_rounds)),
        "veil_flower_wall_s": veil_wall,
        "veil_stage_link_status": link_status,
        "veil_stage_link_rounds_s": link_rounds,
        "veil_stage_link_round_s": link_round,
        "veil_stage_link_train_exchange_median_s": _median([x[0] for x in link_x]),
        "veil_stage_link_stage_exchange_median_s": _median([v for x in link_x for v in x[1:]]),
        "veil_stage_link_wall_s": link_wall,
        "ratio_flower_secagg_over_veil_stage_link": link_ratio,
        "veil_subprocess_rounds_s": sub_rounds,
        "veil_subprocess_round_s": sub_round,
        "ratio_flower_secagg_over_veil_subprocess": fl / sub_round if fl and sub_round else None,
        "flower": flower,
        "simulation_rounds_s": sim_rounds,
        "simulation_round_s": sim_round,
        "simulation_wall_s": sim_wall,
        "ratio_flower_secagg_over_veil_flower": ratio,
        "ratio_veil_flower_over_simulation": (
            veil_round / sim_round if veil_round and sim_round else None
        ),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": machine_info(),
        "targets_met": {
            # every stage as a Flower message (the premise: the same transport)
            "veil_secagg_5x_faster_than_flower_secagg": bool(ratio is not None and ratio >= 5.0),
            # stages 2-5 over veil's stage link (Flower carries hello and train)
            "veil_stage_link_secagg_5x_faster_than_flower_secagg": bool(
                link_ratio is not None and link_ratio >= 5.0),
        },
    }
