"""Demo section: the demo's digits model classified by three MPC party processes.

``section_private_inference_mpc(ctx)`` takes the federated run's digits model (or, if the
demo has not trained one, veil's example digits MLP), describes it in the IR, and has three
compute parties — OS processes talking mutual TLS on loopback — classify test-split digits
from secret shares. It prints time by phase, rounds and bytes beside plaintext, and stores
the headline numbers in ``ctx.results``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from veil.cli.demo import DemoContext

__all__ = ["section_private_inference_mpc", "section_private_inference_fhe", "demo_model"]


def demo_model(ctx: DemoContext) -> tuple[Any, np.ndarray, np.ndarray]:
    """(IR model, test inputs, test labels): the FedAvg run's model if there is one."""
    from veil.data import load_digits
    from veil.models.ir import from_torch

    data = load_digits()
    run_dir = ctx.run_dirs.get("fedavg")
    if run_dir is not None:
        from veil.models.export import load_model

        model = from_torch(load_model(run_dir), (64,), name="demo-fedavg digits MLP")
    else:
        from veil.securecompute.recommend_models import NAMED_MODELS

        model = NAMED_MODELS["digits-mlp"]().model
    return model, data.x_test.astype(np.float64), data.y_test


def section_private_inference_mpc(ctx: DemoContext) -> None:
    """Classify test-split digits with three MPC party processes; compare with plaintext."""
    from rich.table import Table

    from veil.models.ir import evaluate
    from veil.securecompute.mpc import MpcConfig
    from veil.securecompute.mpc.processes import ProcessSession

    c = ctx.console
    c.rule("[bold]Private inference (mpc)[/] — three compute parties, replicated secret "
           "sharing over TLS")
    model, x, y = demo_model(ctx)
    x = x[: 20 if ctx.quick else 200]
    y = y[: len(x)]
    t0 = time.perf_counter()
    plain = evaluate(model, x)
    plain_s = time.perf_counter() - t0
    with c.status("starting three party processes, sharing the model"):
        sess = ProcessSession(model, MpcConfig()).start()
    try:
        one = sess.infer(x[:1])
        batch = sess.infer(x)
    finally:
        sess.close()
    agree = float(np.mean(batch.output.argmax(1) == plain.argmax(1)))
    acc = float(np.mean(batch.output.argmax(1) == y))
    t = Table(title=f"{model.name}: {model.n_parameters():,} parameters, "
              f"{len(x)} digits of the test split", title_justify="left")
    for col in ("", "plaintext", "mpc, 1 digit", f"mpc, batch of {len(x)}"):
        t.add_column(col, justify="right")
    t.add_row("online time", f"{plain_s * 1e3:.2f} ms", f"{one.phases.online_s * 1e3:.1f} ms",
              f"{batch.phases.online_s * 1e3:.1f} ms")
    t.add_row("input sharing / reveal", "—",
              f"{one.phases.input_s * 1e3:.1f} / {one.phases.reveal_s * 1e3:.1f} ms",
              f"{batch.phases.input_s * 1e3:.1f} / {batch.phases.reveal_s * 1e3:.1f} ms")
    t.add_row("rounds", "—", str(one.phases.rounds), str(batch.phases.rounds))
    t.add_row("bytes between parties", "—", f"{one.phases.bytes:,}", f"{batch.phases.bytes:,}")
    t.add_row("accuracy (labels)", f"{np.mean(plain.argmax(1) == y):.2%}", "", f"{acc:.2%}")
    c.print(t)
    c.print(f"same class as plaintext on {agree:.2%} of the digits; model shared once in "
            f"{one.setup_s:.2f} s ({one.setup_bytes:,} bytes); no party saw a digit or a weight")
    ctx.results["mpc online time, 1 digit (ms)"] = one.phases.online_s * 1e3
    ctx.results["mpc agreement with plaintext"] = agree
    ctx.results["mpc bytes, 1 digit"] = int(one.phases.bytes)


def section_private_inference_fhe(ctx: DemoContext) -> None:
    """The same model under CKKS (one server, client holds the key); then the recommender.

    Measures both backends on the same batch (fhe: client encrypts, server evaluates on
    ciphertexts, client decrypts; mpc: three in-process parties) and lets
    :func:`veil.securecompute.recommend.choose` pick one from those measurements.
    """
    from rich.table import Table

    from veil.data import load_digits
    from veil.securecompute.recommend import LOOPBACK, choose
    from veil.securecompute.recommend_measure import measure_fhe, measure_mpc

    c = ctx.console
    c.rule("[bold]Private inference (fhe) and the recommender[/] — CKKS, the client holds "
           "the key")
    model, x, y = demo_model(ctx)
    batch = x[:8]
    calibration = load_digits().x_train[:200].astype(np.float64)  # the model owner's data
    with c.status("CKKS: compiling, key generation, encrypted evaluation"):
        fhe = measure_fhe(model, batch, calibration, repeats=1)
    with c.status("mpc: the same batch with three in-process parties"):
        mpc = measure_mpc(model, batch, repeats=1)
    t = Table(title=f"{model.name}: a request of {len(batch)} digits", title_justify="left")
    for col in ("backend", "per request", "rounds", "bytes", "set-up", "same class as plain"):
        t.add_column(col, justify="right")
    for cost in (fhe, mpc):
        if not cost.supported:
            t.add_row(cost.backend, "unsupported", "", "", "", cost.reason)
            continue
        t.add_row(cost.backend, f"{cost.compute_s * 1e3:.1f} ms", str(cost.rounds),
                  f"{cost.bytes:,}", f"{cost.setup_s:.2f} s",
                  f"{cost.accuracy.get('agreement', float('nan')):.2%}")
    c.print(t)
    rec = choose([mpc, fhe], network=LOOPBACK)
    c.print(f"recommended on this machine's loopback: [bold]{rec.choice}[/]")
    for reason in rec.reasons[1:]:
        c.print(f"  - {reason}")
    if fhe.supported:
        ctx.results["fhe latency per request (ms)"] = fhe.compute_s * 1e3
        ctx.results["fhe agreement with plaintext"] = fhe.accuracy.get("agreement", 0.0)
    ctx.results["recommended inference backend"] = rec.choice or "none"
