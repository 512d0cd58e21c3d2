"""``veil bench simulation``: client updates per second of in-process federated simulation.

The task (issue 2): FedAvg on scikit-learn's digits with the 26,122-parameter MLP
(``build_model("mlp", (64,), 10)``, 64-128-128-10), 100 IID sites all taking part in every
round, 1 local epoch of plain SGD (batch 32, lr 0.1). Three implementations of the same
task are measured in one run, side by side:

* **veil**: :class:`veil.training.Trainer` trains the 100 sites together;
  measured alone (local training) and as a full round (training + FedAvg through
  ``Pipeline([WeightedMean()], PlainSum())`` + applying the mean update).
* **loop**: a plain one-process torch loop over the sites (one reused model, ``torch.optim.SGD``,
  the same batch schedule), the obvious way to simulate without a framework. Its updates are
  compared with veil's (``max_abs_diff``): the vectorised result is the same training.
* **flower**: Flower 1.41's simulation (Ray backend, 2 CPUs) on the same task, run by
  ``benchmarks/peers/flower_sim.py`` in the isolated venv ``.peers/flwr`` when
  ``benchmarks/peers/setup_flower.sh`` has created it.

Rates are medians over rounds after warm-up; ratios are taken within this run.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from veil.bench._peers import flower_python, run_peer_script

__all__ = ["run", "SITES", "flower_python"]

#: Sites per round (all of them take part).
SITES = 100
_SEED = 0


def _task() -> tuple[Any, Any, Any, Any, Any]:
    import numpy as np

    from veil.data import load_digits, partition
    from veil.training import LocalConfig, SiteData
    from veil.models import build_model

    d = load_digits()
    parts = partition(d.y_train, SITES, "iid", seed=_SEED)
    data = SiteData(d.x_train, d.y_train, parts)
    model = build_model("mlp", d.input_shape, d.n_classes, seed=_SEED)
    cfg = LocalConfig(epochs=1, batch_size=32, lr=0.1)
    return d, data, model, cfg, np.arange(SITES)


class _Timer:
    """Wall-clock and this thread's CPU time (the latter barely moves when other processes
    compete for the cores, so it is reported next to the wall-clock rate)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __enter__(self) -> _Timer:
        self._w, self._c = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall.append(time.perf_counter() - self._w)
        self.cpu.append(time.thread_time() - self._c)

    def rates(self, warmup: int) -> tuple[float, float]:
        return (
            SITES / statistics.median(self.wall[warmup:]),
            SITES / statistics.median(self.cpu[warmup:]),
        )


def _loop_round(model: Any, data: Any, cfg: Any, ids: Any, g: Any, r: int) -> Any:
    """One round of a plain torch loop over the sites (same batch schedule as veil).

    Kept lean so the comparison is fair: the schedule is computed once for all sites (a
    site's schedule does not depend on the others), one model and one optimiser (plain SGD
    holds no state) are reused, the data are pre-sliced tensors.
    """
    import torch
    from torch.nn.utils import parameters_to_vector

    from veil.training import batch_schedule, load_flat_params

    idx, mask = batch_schedule(data.sizes[ids], ids, cfg.batch_size, cfg.epochs, _SEED, r)
    counts = mask.sum(axis=2).astype(int)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    ups = []
    for j, i in enumerate(ids):
        x, y = data.site(int(i))
        load_flat_params(model, g)  # a copy (vector_to_parameters would alias g)
        for t in range(idx.shape[0]):
            k = counts[t, j]
            if k == 0:
                continue
            sel = torch.from_numpy(idx[t, j, :k])
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[sel]), y[sel]).backward()
            opt.step()
        ups.append(parameters_to_vector(model.parameters()).detach() - g)
    return torch.stack(ups)


def _bench_in_process(rounds: int, warmup: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """veil and the plain loop, interleaved round by round so both see the same load.

    Each round: veil trains the 100 sites from the global parameters, the loop trains them
    from the same parameters with the same schedule (their updates are compared), then
    veil's FedAvg pipeline aggregates and the global parameters move.
    """
    import copy

    import numpy as np
    import torch

    from veil.aggregation import EncodeContext, Pipeline, PlainSum, WeightedMean
    from veil.training import Trainer, flat_params

    _, data, model, cfg, ids = _task()
    trainer = Trainer(model, "classification", cfg)
    loop_model = copy.deepcopy(model)
    pipeline = Pipeline([WeightedMean()], PlainSum())
    state = pipeline.init()
    weights = data.sizes[ids].astype(np.float64)
    g = flat_params(model).clone()
    train_t, agg_t, loop_t, direct_t = _Timer(), _Timer(), _Timer(), _Timer()
    w32 = torch.from_numpy(weights).to(torch.float32)
    diff = agg_diff = 0.0
    for r in range(warmup + rounds):
        with train_t:
            updates = trainer.train(g, data, ids, _SEED, r)
        with loop_t:
            loop_updates = _loop_round(loop_model, data, cfg, ids, g, r)
        diff = max(diff, float((loop_updates - updates).abs().max()))
        with direct_t:  # the same weighted mean as one matrix-vector product, for reference
            direct = torch.mv(updates.t(), w32) / w32.sum()
        with agg_t:
            ctx = EncodeContext(round=r, site_ids=ids, weights=weights, cohort_size=len(ids))
            state, res = pipeline.run_round(state, updates.numpy(), ctx)
            g += torch.from_numpy(res.aggregate).to(torch.float32)
        agg = torch.from_numpy(res.aggregate)
        agg_diff = max(agg_diff, float((direct.double() - agg).abs().max()))
    train_w = statistics.median(train_t.wall[warmup:])
    agg_w = statistics.median(agg_t.wall[warmup:])
    rounds_w = [a + b for a, b in zip(train_t.wall[warmup:], agg_t.wall[warmup:])]
    direct_rounds = [a + b for a, b in zip(train_t.wall[warmup:], direct_t.wall[warmup:])]
    veil = {
        "path": "linear-chain fast path" if trainer.fast_path else "vmap",
        "rounds_timed": rounds,
        "train_s_per_round": train_w,
        "aggregate_s_per_round": agg_w,
        "updates_per_s": train_t.rates(warmup)[0],
        "updates_per_s_cpu_time": train_t.rates(warmup)[1],
        "updates_per_s_full_round": SITES / statistics.median(rounds_w),
        "aggregation": repr(pipeline),
        # the same FedAvg mean as torch.mv (not used for the model; shows the pipeline's cost)
        "direct_mean_s_per_round": statistics.median(direct_t.wall[warmup:]),
        "updates_per_s_full_round_direct_mean": SITES / statistics.median(direct_rounds),
        "direct_mean_max_abs_diff": agg_diff,
    }
    loop = {
        "rounds_timed": rounds,
        "round_s": statistics.median(loop_t.wall[warmup:]),
        "updates_per_s": loop_t.rates(warmup)[0],
        "updates_per_s_cpu_time": loop_t.rates(warmup)[1],
        "max_abs_diff_vs_veil": diff,
    }
    return veil, loop


def _bench_flower(rounds: int) -> dict[str, Any]:
    res = run_peer_script("flower_sim.py", ["--rounds", str(rounds), "--cpus", "2"], 600)
    if res["status"] != "ok":
        res["status"] = "flower: " + res["status"]
    return res


def run(quick: bool = False, threads: int = 1) -> dict[str, Any]:
    """Measure veil's vectorised simulation, a plain torch loop and (if installed) Flower.

    Args:
        quick: fewer rounds (a smoke run, about half a minute with Flower).
        threads: torch intra-op threads for veil and the loop during the measurement
            (restored afterwards). One thread is the default: the machines this runs on
            have two cores shared with other work.

    Returns:
        A JSON-able dict: ``veil``, ``loop`` and ``flower`` sections, ``ratios``, the task,
        ``torch_threads`` and ``machine``.
    """
    import torch

    from veil.bench._machine import machine_info

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        veil, loop = _bench_in_process(rounds=8 if quick else 30, warmup=2)
        machine = machine_info()
    finally:
        torch.set_num_threads(before)
    flower = _bench_flower(rounds=3 if quick else 5)
    ratios: dict[str, float] = {
        "veil_over_loop": veil["updates_per_s"] / loop["updates_per_s"],
        "veil_over_loop_cpu_time": veil["updates_per_s_cpu_time"] / loop["updates_per_s_cpu_time"],
    }
    if flower.get("status") == "ok":
        ratios["veil_over_flower"] = veil["updates_per_s"] / flower["updates_per_s"]
        ratios["veil_full_round_over_flower"] = (
            veil["updates_per_s_full_round"] / flower["updates_per_s"]
        )
        ratios["loop_over_flower"] = loop["updates_per_s"] / flower["updates_per_s"]
    summary = (
        f"veil {veil['updates_per_s']:,.0f} updates/s (full round "
        f"{veil['updates_per_s_full_round']:,.0f}), loop {loop['updates_per_s']:,.0f}"
    )
    if "veil_over_flower" in ratios:
        summary += (
            f", flower {flower['updates_per_s']:,.0f} (first round "
            f"{flower['updates_per_s_first_round']:,.1f}); veil/flower "
            f"{ratios['veil_over_flower']:,.0f}x, veil/loop {ratios['veil_over_loop']:,.1f}x"
        )
    else:
        summary += f"; veil/loop {ratios['veil_over_loop']:,.1f}x; {flower['status']}"
    print(summary, file=sys.stderr)
    return {
        "benchmark": "simulation",
        "task": {
            "data": "digits (sklearn, 1,437 training images)",
            "model": "mlp 64-128-128-10 (26,122 parameters)",
            "sites_per_round": SITES,
            "local": "1 epoch, plain SGD, batch 32, lr 0.1",
            "aggregation": "FedAvg (example-weighted mean)",
        },
        "quick": quick,
        "torch_threads": threads,
        "veil": veil,
        "loop": loop,
        "flower": flower,
        "ratios": ratios,
        "summary": summary,
        "machine": machine,
    }
