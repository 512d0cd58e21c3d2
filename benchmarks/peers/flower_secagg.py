"""Flower's SecAgg+ round cost (run by the .peers/flwr venv): plain fit vs SecAgg+ fit.

One Flower 1.41 simulation (Ray backend limited to ``--cpus`` CPUs) with ``--sites`` sites,
each holding a parameter vector of ``--dim`` float32 values. A site's "training" is trivial
(it returns the global vector plus a small seeded offset), so a round measures the
framework and the protocol, not local computation. Rounds alternate in one session:

* **plain**: Flower's default legacy fit workflow (FedAvg, all sites every round);
* **secagg+**: ``SecAggPlusWorkflow(num_shares=k+1, reconstruction_threshold=t)`` on the
  server and ``secaggplus_mod`` on the clients — the same k (neighbours) and t as veil
  picks for this n, with Flower's default 32-bit modulus. A ``--timeout`` bounds every
  stage (Flower's SecAgg+ otherwise waits forever for a silent site).

The time of a round is the fit stage, from the strategy's ``configure_fit`` to its
``aggregate_fit`` (both legacy hooks are called once per round by either workflow).
Writes JSON with the per-round seconds of both and their medians after the first round
of each. Needs only the Flower venv (flwr, numpy), never veil.

Usage: .peers/flwr/bin/python benchmarks/peers/flower_secagg.py --sites 10 --dim 100000 \
    --k 9 --t 5 --rounds 3 --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any


def _apps(args: argparse.Namespace, times: dict[str, list[float]]) -> tuple[Any, Any]:
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
    from flwr.server.workflow.default_workflows import (
        default_fit_workflow,
        default_init_params_workflow,
    )
    from flwr.server.compat.app_utils import start_update_client_manager_thread
    from flwr.app import ConfigRecord

    dim, n = args.dim, args.sites

    class Site(NumPyClient):  # type: ignore[misc]
        def __init__(self, site: int) -> None:
            self.site = site

        def fit(self, parameters: list[Any], config: dict[str, Any]) -> Any:
            gen = np.random.default_rng(self.site)
            out = parameters[0] + gen.normal(0, 0.01, dim).astype(np.float32)
            return [out], 1, {}

    def client_fn(context: Context) -> Any:
        return Site(int(context.node_config["partition-id"])).to_client()

    def secagg_when_asked(msg: Any, ctxt: Context, call_next: Any) -> Any:
        """Plain and SecAgg+ rounds share one ClientApp: apply the mod only to messages
        that carry SecAgg+ configs (the plain workflow sends none)."""
        if "secaggplus_configs" in msg.content.config_records:
            return secaggplus_mod(msg, ctxt, call_next)
        return call_next(msg, ctxt)

    client = ClientApp(client_fn=client_fn, mods=[secagg_when_asked])

    class Timed(FedAvg):  # type: ignore[misc]
        label = "plain"

        def configure_fit(self, *a: Any, **kw: Any) -> Any:
            self._t0 = time.perf_counter()
            return super().configure_fit(*a, **kw)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            out = super().aggregate_fit(server_round, results, failures)
            if len(results) != n:
                raise RuntimeError(f"{self.label}: {len(results)} of {n} sites answered")
            times[self.label].append(time.perf_counter() - self._t0)
            return out

    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Context) -> None:
        strategy = Timed(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n,
            min_available_clients=n,
            initial_parameters=ndarrays_to_parameters([np.zeros(dim, np.float32)]),
        )
        ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=1), strategy=strategy)
        secagg = SecAggPlusWorkflow(
            num_shares=args.k + 1, reconstruction_threshold=args.t, timeout=args.timeout
        )
        thread, stop, done = start_update_client_manager_thread(grid, ctx.client_manager)
        done.wait()
        try:
            default_init_params_workflow(grid, ctx)
            cfg = ConfigRecord()
            ctx.state.config_records[MAIN_CONFIGS_RECORD] = cfg
            for r in range(1, args.rounds + 1):
                for label, flow in (("plain", default_fit_workflow), ("secagg+", secagg)):
                    cfg[Key.CURRENT_ROUND] = 2 * r - (label == "plain")
                    strategy.label = label
                    before = len(times[label])
                    flow(grid, ctx)
                    if len(times[label]) != before + 1:
                        raise RuntimeError(f"{label} round {r} did not finish")
        finally:
            stop.set()
            thread.join()

    return server, client


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--dim", type=int, default=100_000)
    ap.add_argument("--k", type=int, required=True, help="neighbours per site (veil's k)")
    ap.add_argument("--t", type=int, required=True, help="reconstruction threshold")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=60.0, help="SecAgg+ stage timeout (s)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")

    import flwr
    from flwr.simulation import run_simulation

    times: dict[str, list[float]] = {"plain": [], "secagg+": []}
    server, client = _apps(args, times)
    t0 = time.perf_counter()
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=args.sites,
        backend_config={
            "init_args": {"num_cpus": args.cpus, "include_dashboard": False},
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        },
    )
    wall = time.perf_counter() - t0
    if any(len(v) != args.rounds for v in times.values()):
        print(f"expected {args.rounds} rounds of each, saw {times}", file=sys.stderr)
        return 1
    med = {k: statistics.median(v[1:] or v) for k, v in times.items()}
    result = {
        "framework": f"flwr {flwr.__version__}",
        "sites": args.sites,
        "dim": args.dim,
        "num_shares": args.k + 1,
        "reconstruction_threshold": args.t,
        "ray_cpus": args.cpus,
        "rounds": args.rounds,
        "plain_s": times["plain"],
        "secagg_s": times["secagg+"],
        "plain_median_s": med["plain"],
        "secagg_median_s": med["secagg+"],
        "wall_s": wall,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
