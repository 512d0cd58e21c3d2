"""``veil bench simulation``: client updates per second of in-process federated simulation.

Two tasks, both FedAvg on scikit-learn's digits with the 26,122-parameter MLP
(``build_model("mlp", (64,), 10)``, 64-128-128-10) and 100 IID sites (≈14 examples each)
all taking part in every round, plain SGD at lr 0.1:

* **one_step** (issue 2): 1 local epoch at batch 32 — one SGD step per site per round, the
  best case for vectorisation (top-level ``veil``/``loop``/``flower``/``ratios``);
* **realistic** (issue 8): 5 local epochs at batch 8 — 10 steps per site per round
  (section ``realistic``).

Three implementations of each task are measured in one run, side by side:

* **veil**: :class:`veil.training.Trainer` trains the 100 sites together;
  measured alone (local training) and as a full round (training + FedAvg through
  ``Pipeline([WeightedMean()], PlainSum())`` + applying the mean update).
* **loop**: a plain one-process torch loop over the sites (one reused model, ``torch.optim.SGD``,
  the same batch schedule), the obvious way to simulate without a framework. Its updates are
  compared with veil's (``max_abs_diff``): the vectorised result is the same training.
* **flower**: Flower 1.41's simulation (Ray backend, 2 CPUs) on the same task, run by
  ``benchmarks/peers/flower_sim.py`` in the isolated venv ``.peers/flwr`` when
  ``benchmarks/peers/setup_flower.sh`` has created it.

Rates are medians over rounds after warm-up; ratios are taken within this run. Target
(``targets_met``): veil's whole round (training + aggregation) ≥ 100x Flower's updates/s on
both tasks.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from veil.bench._peers import flower_python, run_peer_script

__all__ = ["run", "SITES", "TASKS", "TARGET_OVER_FLOWER", "flower_python"]

#: Sites per round (all of them take part).
SITES = 100
_SEED = 0
#: (local epochs, batch size) of each task
TASKS = {"one_step": (1, 32), "realistic": (5, 8)}
#: veil's whole round must be at least this many times Flower's updates/s
TARGET_OVER_FLOWER = 100.0


def _task(epochs: int, batch: int) -> tuple[Any, Any, Any, Any, Any]:
    import numpy as np

    from veil.data import load_digits, partition
    from veil.models import build_model
    from veil.training import LocalConfig, SiteData

    d = load_digits()
    parts = partition(d.y_train, SITES, "iid", seed=_SEED)
    data = SiteData(d.x_train, d.y_train, parts)
    model = build_model("mlp", d.input_shape, d.n_classes, seed=_SEED)
    cfg = LocalConfig(epochs=epochs, batch_size=batch, lr=0.1)
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


def _bench_in_process(
    rounds: int, warmup: int, epochs: int = 1, batch: int = 32
) -> tuple[dict[str, Any], dict[str, Any]]:
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

    _, data, model, cfg, ids = _task(epochs, batch)
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


def _bench_flower(rounds: int, epochs: int = 1, batch: int = 32) -> dict[str, Any]:
    args = ["--rounds", str(rounds), "--cpus", "2", "--epochs", str(epochs),
            "--batch-size", str(batch)]
    res = run_peer_script("flower_sim.py", args, 900)
    if res["status"] != "ok":
        res["status"] = "flower: " + res["status"]
    return res


def _ratios(veil: dict[str, Any], loop: dict[str, Any], flower: dict[str, Any]) -> dict[str, float]:
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
    return ratios


def _summary(name: str, veil: dict[str, Any], loop: dict[str, Any], flower: dict[str, Any],
             ratios: dict[str, float]) -> str:
    out = (
        f"{name}: veil {veil['updates_per_s']:,.0f} updates/s (full round "
        f"{veil['updates_per_s_full_round']:,.0f}), loop {loop['updates_per_s']:,.0f}"
    )
    if "veil_over_flower" in ratios:
        out += (
            f", flower {flower['updates_per_s']:,.1f} (first round "
            f"{flower['updates_per_s_first_round']:,.1f}); full round/flower "
            f"{ratios['veil_full_round_over_flower']:,.0f}x, veil/loop "
            f"{ratios['veil_over_loop']:,.1f}x"
        )
    else:
        out += f"; veil/loop {ratios['veil_over_loop']:,.1f}x; {flower['status']}"
    return out


def run(quick: bool = False, threads: int = 1) -> dict[str, Any]:
    """Measure veil's vectorised simulation, a plain torch loop and (if installed) Flower.

    Args:
        quick: fewer rounds (a smoke run).
        threads: torch intra-op threads for veil and the loop during the measurement
            (restored afterwards). One thread is the default: the machines this runs on
            have two cores shared with other work.

    Returns:
        A JSON-able dict: for the one-step task ``veil``, ``loop``, ``flower`` and
        ``ratios``; the same for the realistic task under ``realistic``; ``targets_met``,
        the tasks, ``torch_threads`` and ``machine``.
    """
    import torch

    from veil.bench._machine import machine_info

    results: dict[str, dict[str, Any]] = {}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name, (epochs, batch) in TASKS.items():
            rounds = (8 if quick else 30) if epochs == 1 else (4 if quick else 12)
            veil, loop = _bench_in_process(rounds, 2, epochs, batch)
            results[name] = {"veil": veil, "loop": loop}
        machine = machine_info()
    finally:
        torch.set_num_threads(before)
    targets: dict[str, bool] = {}
    lines = []
    for name, (epochs, batch) in TASKS.items():
        r = results[name]
        r["flower"] = _bench_flower(3 if quick else 5, epochs, batch)
        r["ratios"] = _ratios(r["veil"], r["loop"], r["flower"])
        r["task"] = {
            "data": "digits (sklearn, 1,437 training images)",
            "model": "mlp 64-128-128-10 (26,122 parameters)",
            "sites_per_round": SITES,
            "local": f"{epochs} epoch(s), plain SGD, batch {batch}, lr 0.1",
            "aggregation": "FedAvg (example-weighted mean)",
        }
        got = r["ratios"].get("veil_full_round_over_flower")
        targets[f"full_round_{TARGET_OVER_FLOWER:g}x_flower_{name}"] = bool(
            got is not None and got >= TARGET_OVER_FLOWER
        )
        lines.append(_summary(name, r["veil"], r["loop"], r["flower"], r["ratios"]))
    summary = "; ".join(lines)
    print(summary, file=sys.stderr)
    one = results["one_step"]
    return {
        "benchmark": "simulation",
        "task": one["task"],
        "quick": quick,
        "torch_threads": threads,
        "veil": one["veil"],
        "loop": one["loop"],
        "flower": one["flower"],
        "ratios": one["ratios"],
        "realistic": results["realistic"],
        "targets_met": targets,
        "summary": summary,
        "machine": machine,
    }
