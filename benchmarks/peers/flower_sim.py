"""Flower's simulation on veil's simulation-benchmark task (run by the .peers/flwr venv).

FedAvg on scikit-learn's digits with the 64-128-128-10 MLP (26,122 parameters), 100 sites
(IID shards of the training split) all sampled every round, 1 local epoch of plain SGD
(batch 32, lr 0.1) per site — the task of ``veil bench simulation``. The data split and
partition follow veil's (stratified 80/20 split with seed 0, pixels / 16, a seeded
permutation cut into equal shards), re-implemented here so this script needs only the
Flower venv (flwr, torch, scikit-learn), never veil.

Runs Flower's Message API (``ServerApp`` + ``ClientApp`` + ``flwr.serverapp.strategy.FedAvg``)
through ``flwr.simulation.run_simulation`` on the Ray backend limited to ``--cpus`` CPUs, and
writes JSON: seconds per round (taken from FedAvg's ``evaluate_fn`` hook, which the strategy
calls once before the first round and once after every round), client updates per second
excluding the first round (median over the later rounds), for the first round alone, and
including start-up (all updates / wall time of ``run_simulation``, Ray start included).

Usage: .peers/flwr/bin/python benchmarks/peers/flower_sim.py --rounds 4 --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flower_task import BATCH, EPOCHS, N_SITES, make_client_app, mlp  # noqa: E402 (beside it)


def _build_apps(
    n_rounds: int, stamps: list[float], replies: list[int], epochs: int = EPOCHS,
    batch: int = BATCH,
) -> tuple[Any, Any]:
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    client = make_client_app(epochs, batch)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(0)
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=N_SITES,
            min_available_nodes=N_SITES,
        )

        def stamp(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            stamps.append(time.perf_counter())
            return None

        strategy.configure_train = _with_round(strategy.configure_train)
        strategy.aggregate_train = _counting(strategy.aggregate_train, replies)
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(mlp().state_dict()),
            num_rounds=n_rounds,
            train_config=ConfigRecord({"round": 0}),
            evaluate_fn=stamp,
        )

    return server, client


def _with_round(configure_train: Any) -> Any:
    """Put the round number into each train message's config (seeds the local shuffles)."""

    def wrapped(server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
        config["round"] = server_round
        return configure_train(server_round, arrays, config, grid)

    return wrapped


def _counting(aggregate_train: Any, replies: list[int]) -> Any:
    """Record how many sites answered each round without an error."""

    def wrapped(server_round: int, train_replies: Any) -> Any:
        train_replies = list(train_replies)
        replies.append(sum(1 for r in train_replies if r.has_content()))
        return aggregate_train(server_round, train_replies)

    return wrapped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use (one actor each)")
    ap.add_argument("--out", required=True, help="where to write the JSON result")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help="local epochs per round")
    ap.add_argument("--batch-size", type=int, default=BATCH, help="local minibatch size")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")

    import flwr
    import torch
    from flwr.simulation import run_simulation

    stamps: list[float] = []
    replies: list[int] = []
    server, client = _build_apps(args.rounds, stamps, replies, args.epochs, args.batch_size)
    t0 = time.perf_counter()
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=N_SITES,
        backend_config={
            "init_args": {"num_cpus": args.cpus, "include_dashboard": False},
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        },
    )
    wall = time.perf_counter() - t0
    per_round = [b - a for a, b in zip(stamps, stamps[1:])]
    if len(per_round) != args.rounds or replies != [N_SITES] * args.rounds:
        print(
            f"expected {args.rounds} rounds of {N_SITES} updates, saw {len(per_round)} rounds "
            f"with {replies} successful updates",
            file=sys.stderr,
        )
        return 1
    later = per_round[1:] or per_round
    result = {
        "framework": f"flwr {flwr.__version__}",
        "torch": torch.__version__,
        "rounds": args.rounds,
        "sites_per_round": N_SITES,
        "local_epochs": args.epochs,
        "batch_size": args.batch_size,
        "ray_cpus": args.cpus,
        "seconds_per_round": per_round,
        "updates_per_s": N_SITES / statistics.median(later),
        "updates_per_s_first_round": N_SITES / per_round[0],
        "updates_per_s_including_startup": N_SITES * args.rounds / wall,
        "wall_s": wall,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
