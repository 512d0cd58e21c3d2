"""`veil bench dpsgd`: time per DP-SGD step vs the non-private step and vs Opacus hooks.

For each model (digits MLP 64-128-128-10 at batch 256; the Fashion-MNIST SmallCNN at
batch 256), one thread, measured side by side in the same process, interleaved:

* ``plain``: ordinary torch step (forward, mean loss, backward, SGD update).
* ``veil``: one DP-SGD step of :func:`veil.training.dpsgd_trainer` on the same batch
  (ghost-norm per-example clipping, CSPRNG Gaussian noise, update).
* ``veil_train``: :meth:`veil.training.Trainer.train` over a round (Poisson sampling with expected
  batch 256 included), divided by the number of steps.
* ``opacus``: Opacus' default hook-based ``GradSampleModule`` + ``DPOptimizer`` step.

Targets: ``veil / plain ≤ 2`` and ``opacus / veil ≥ 3``. Numbers are medians of
interleaved repetitions; ratios come from the same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from veil.bench._machine import machine_info

__all__ = ["run"]


def _plain_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def _veil_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    from veil.training import FreshStreams, LocalConfig, RoundSites, dpsgd_trainer, flat_params

    b = len(y)
    tr = dpsgd_trainer(
        model, "classification", LocalConfig(lr=0.01), noise_multiplier=1.0,
        max_grad_norm=1.0, expected_batch_size=b,
    )
    flat = flat_params(model).unsqueeze(0).clone()
    out = torch.empty_like(flat)
    xb, yb, mb = x[None], y[None], torch.ones(1, b)
    ids, sizes = np.array([0]), np.array([b])

    batches = tr.schedule.plan(RoundSites(ids, sizes, 0, 0, FreshStreams()))

    def step() -> None:
        sites = RoundSites(ids, sizes, 0, 0, FreshStreams())
        g = tr.gradients.open(sites, batches)(flat, xb, yb, mb, 0, out)
        flat.add_(g, alpha=-0.01)

    return step


def _veil_train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int
) -> tuple[Callable[[], object], int]:
    from veil.training import LocalConfig, SiteData, dpsgd_trainer, flat_params

    b = len(y)
    n = b * steps
    reps = -(-n // b)
    xs = x.repeat(reps, *[1] * (x.dim() - 1))[:n].numpy()
    ys = y.repeat(reps)[:n].numpy()
    data = SiteData(xs, ys, [np.arange(n)])
    tr = dpsgd_trainer(
        model, "classification", LocalConfig(lr=0.01), noise_multiplier=1.0,
        max_grad_norm=1.0, expected_batch_size=b,
    )
    g0 = flat_params(model)
    return (lambda: tr.train(g0, data, np.array([0]), seed=0, round=0)), tr.steps(n)


def _opacus_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    gsm = GradSampleModule(model)
    opt = DPOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.01), noise_multiplier=1.0,
        max_grad_norm=1.0, expected_batch_size=len(y),
    )

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(gsm(x), y).backward()
        opt.step()

    return step


def _bench_model(name: str, make: Callable[[], nn.Module], shape: tuple[int, ...], batch: int,
                 reps: int, inner: int) -> dict[str, Any]:
    import copy
    import warnings

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    base = make()
    train_fn, train_steps = _veil_train(copy.deepcopy(base), x, y, steps=inner)
    fns: dict[str, Callable[[], None]] = {
        "plain": _plain_step(copy.deepcopy(base), x, y),
        "veil": _veil_step(copy.deepcopy(base), x, y),
        "opacus": _opacus_step(copy.deepcopy(base), x, y),
    }
    times: dict[str, list[float]] = {k: [] for k in [*fns, "veil_train"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in fns.values():  # warm-up
            f()
            f()
        train_fn()
        for _ in range(reps):
            for k, f in fns.items():
                t = time.perf_counter()
                for _ in range(inner):
                    f()
                times[k].append((time.perf_counter() - t) / inner * 1e3)
            t = time.perf_counter()
            train_fn()
            times["veil_train"].append((time.perf_counter() - t) / train_steps * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": name,
        "batch": batch,
        "params": sum(p.numel() for p in base.parameters()),
        "ms_per_step": {k: round(v, 3) for k, v in med.items()},
        "veil_over_plain": round(med["veil"] / med["plain"], 2),
        "veil_train_over_plain": round(med["veil_train"] / med["plain"], 2),
        "opacus_over_veil": round(med["opacus"] / med["veil"], 2),
        "opacus_over_plain": round(med["opacus"] / med["plain"], 2),
        "targets_met": {
            "veil_le_2x_plain": med["veil"] <= 2 * med["plain"],
            "opacus_ge_3x_veil": med["opacus"] >= 3 * med["veil"],
        },
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Time DP-SGD steps (veil, Opacus hooks) against the non-private step.

    Args:
        quick: fewer repetitions (< 60 s); the full mode uses more for stabler medians.
    """
    from veil.models import MLP, SmallCNN

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        results = [
            _bench_model("digits MLP 64-128-128-10", lambda: MLP(64, 10, (128, 128)), (64,), 256,
                         reps=5 if quick else 15, inner=20 if quick else 50),
            _bench_model("Fashion-MNIST SmallCNN", lambda: SmallCNN(1, 10, 28), (1, 28, 28), 256,
                         reps=3 if quick else 7, inner=3 if quick else 10),
        ]
        info = machine_info()
        return {
            "benchmark": "dpsgd",
            "quick": quick,
            "threads": 1,
            "results": results,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": info,
        }
    finally:
        torch.set_num_threads(threads)
