"""Short on-machine measurements of both backends for one model and batch, cached.

A measurement runs the real backend: mpc with its three parties as OS processes over mutual
TLS on loopback (rounds and bytes are the engine's counts), fhe with its client and server
roles exchanging bytes. Results are cached as JSON under ``cache_dir`` keyed by a
SHA-256 of the model (layer types and weights), the batch size and the backend, so
``veil recommend`` is instant the second time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from veil.models.ir import Model, UnsupportedModelError, evaluate
from veil.securecompute.recommend import BackendCost, Network, Recommendation, choose

__all__ = ["model_key", "measure_fhe", "measure_mpc", "measure", "recommend", "default_cache_dir",
           "cost_from_row", "measured_total"]


def default_cache_dir() -> Path:
    """``$VEIL_CACHE/recommend`` or ``~/.cache/veil/recommend``."""
    base = os.environ.get("VEIL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "veil")
    return Path(base) / "recommend"


def model_key(model: Model, batch: int) -> str:
    """SHA-256 over the layer types, their arrays and the batch size."""
    h = hashlib.sha256(f"{model.input_shape}|{model.task}|{batch}".encode())
    for layer in model.layers:
        h.update(type(layer).__name__.encode())
        for f in fields(layer):
            v = getattr(layer, f.name)
            for a in v if isinstance(v, tuple) else (v,):
                if isinstance(a, np.ndarray):
                    h.update(np.ascontiguousarray(a).tobytes())
                else:
                    h.update(repr(a).encode())
    return h.hexdigest()[:32]


def _accuracy(model: Model, got: np.ndarray, x: np.ndarray) -> dict[str, float]:
    want = evaluate(model, x).reshape(len(x), -1)
    got = np.asarray(got).reshape(len(x), -1)
    if model.task == "classification" and want.shape[1] > 1:
        return {"agreement": float(np.mean(got.argmax(1) == want.argmax(1)))}
    rel = np.abs(got[:, : want.shape[1]] - want) / np.maximum(1.0, np.abs(want))
    return {"max_rel_err": float(rel.max())}


def measure_fhe(model: Model, x: np.ndarray, calibration: np.ndarray, *, degree: Any = "auto",
                repeats: int = 2) -> BackendCost:
    """Measure the fhe backend on the batch ``x``."""
    from veil.securecompute.fhe.run import run_inference

    try:
        r = run_inference(model, x, calibration, degree=degree, repeats=repeats)
    except UnsupportedModelError as e:
        return BackendCost("fhe", False, reason=str(e).replace("fhe backend: ", ""), batch=len(x))
    return BackendCost(
        "fhe", True, compute_s=r.latency_s, rounds=1, bytes=r.bytes_up + r.bytes_down,
        setup_s=r.setup_s, setup_bytes=r.bytes_keys, accuracy=_accuracy(model, r.outputs, x),
        batch=len(x),
        phases={"encrypt_s": r.encrypt_s, "server_s": r.server_s, "decrypt_s": r.decrypt_s},
        measured_on="client and server roles in one process, exchanging bytes",
    )


def measure_mpc(model: Model, x: np.ndarray, *, repeats: int = 2,
                processes: bool = True) -> BackendCost:
    """Measure the mpc backend on the batch ``x``: by default its three parties as OS
    processes over mutual TLS on loopback (what ``veil infer --backend mpc`` and the
    benchmark run), after one warm-up request; ``processes=False``: threads in this process.

    The per-request time measured over loopback includes loopback's network cost; the cost
    model's ``compute_s`` is that time minus the model's network term on
    :data:`~veil.securecompute.recommend.LOOPBACK` (as :func:`cost_from_row` does for a
    benchmark row), so the prediction reproduces the measurement on loopback and
    extrapolates to other networks.
    """
    from veil.securecompute.mpc import MpcConfig, MpcSession
    from veil.securecompute.mpc.processes import ProcessSession
    from veil.securecompute.recommend import LOOPBACK

    try:
        if processes:
            with ProcessSession(model, MpcConfig(deadline_s=120.0)) as ps:
                ps.infer(x)  # warm-up (first-touch allocations), not counted
                runs = [ps.infer(x) for _ in range(max(1, repeats))]
        else:
            with MpcSession(model) as s:
                runs = [s.infer(x) for _ in range(max(1, repeats))]
    except UnsupportedModelError as e:
        return BackendCost("mpc", False, reason=str(e), batch=len(x))
    best = min(runs, key=lambda r: r.phases.input_s + r.phases.online_s + r.phases.reveal_s)
    p = best.phases
    total = p.input_s + p.online_s + p.reveal_s
    net = (int(p.rounds) * LOOPBACK.rtt_s + int(p.bytes) / LOOPBACK.bandwidth_bps) if processes \
        else 0.0
    return BackendCost(
        "mpc", True, compute_s=max(0.0, total - net), rounds=int(p.rounds),
        bytes=int(p.bytes), setup_s=best.setup_s, setup_bytes=int(best.setup_bytes),
        accuracy=_accuracy(model, best.output, x), batch=len(x),
        phases={"input_s": p.input_s, "online_s": p.online_s, "reveal_s": p.reveal_s,
                "measured_total_s": total},
        measured_on="3 party processes, mutual TLS over loopback" if processes
        else "3 parties as threads in one process",
    )


def measure(
    model: Model,
    x: np.ndarray,
    calibration: np.ndarray,
    *,
    cache_dir: Path | None = None,
    refresh: bool = False,
    backends: tuple[str, ...] = ("mpc", "fhe"),
) -> list[BackendCost]:
    """Costs of each backend for ``model`` on batches like ``x`` (cached by model and batch)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = model_key(model, len(x))
    out = []
    for b in backends:
        path = cache / f"{key}-{b}{'-tls' if b == 'mpc' else ''}.json"  # mpc: TLS processes
        if path.exists() and not refresh:
            out.append(BackendCost.from_dict(json.loads(path.read_text())))
            continue
        cost = measure_mpc(model, x) if b == "mpc" else measure_fhe(model, x, calibration)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cost.to_dict(), indent=1))
        tmp.replace(path)
        out.append(cost)
    return out


def recommend(
    model: Model,
    x: np.ndarray,
    calibration: np.ndarray,
    *,
    network: Network | None = None,
    threat: str = "either",
    latency_budget_s: float | None = None,
    cache_dir: Path | None = None,
    refresh: bool = False,
) -> Recommendation:
    """Measure (or read cached) costs and choose; see :func:`veil.securecompute.recommend.choose`.

    Raises:
        ConfigError: unknown threat model or bad network values.
    """
    costs = measure(model, x, calibration, cache_dir=cache_dir, refresh=refresh)
    kw: dict[str, Any] = {"threat": threat, "latency_budget_s": latency_budget_s}
    if network is not None:
        kw["network"] = network
    return choose(costs, **kw)


def cost_from_row(row: dict[str, Any], net: Network | None = None) -> BackendCost:
    """A benchmark row (combined schema) as a :class:`BackendCost` measured on ``net``.

    fhe rows: compute = latency_s (client encryption + server + decryption, one round).
    mpc rows: the measured input + online + reveal time minus the part the cost model
    attributes to the network it ran on (rounds x rtt + bytes / bandwidth), so that the
    model reproduces the measurement on that network and extrapolates to others.
    """
    from veil.securecompute.recommend import LOOPBACK

    net = net or LOOPBACK
    name, backend = row["workload"], row["backend"]
    batch = int(row.get("batch", 1))
    if not row.get("supported", "latency_s" in row):
        return BackendCost(backend, False, reason=str(row.get("reason", "")), batch=batch)
    acc = ({"agreement": float(row["accuracy"])} if "accuracy" in row
           else {"max_abs_err": float(row.get("max_abs_err", 0.0))})
    rounds, nbytes = int(row.get("rounds", 1)), int(row.get("bytes", 0))
    if backend == "fhe":
        total = float(row["latency_s"])
    else:
        total = float(row["latency_s"]) + float(row.get("input_s", 0)) + float(
            row.get("reveal_s", 0))
    compute = max(0.0, total - rounds * net.rtt_s - nbytes / net.bandwidth_bps)
    del name
    return BackendCost(backend, True, compute_s=compute, rounds=rounds, bytes=nbytes,
                       setup_s=float(row.get("setup_s", 0.0)),
                       setup_bytes=int(row.get("bytes_keys", row.get("setup_bytes", 0))),
                       accuracy=acc, batch=batch)


def measured_total(row: dict[str, Any]) -> float:
    """What a benchmark row measured per request (the quantity the test compares)."""
    if row["backend"] == "fhe":
        return float(row["latency_s"])
    return float(row["latency_s"]) + float(row.get("input_s", 0)) + float(row.get("reveal_s", 0))
