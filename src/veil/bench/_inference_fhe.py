"""The ``fhe`` backend of the private-inference benchmark (issue 12's suite under CKKS).

One row per workload in the combined schema: ``workload``, ``backend = "fhe"``,
``latency_s`` (median per request: client encryption + server evaluation + client
decryption — all included, and also given apart as ``encrypt_s``/``server_s``/``decrypt_s``;
``input_s`` = encryption, ``reveal_s`` = decryption), ``setup_s`` (compile + key generation +
sending and loading the evaluation keys + one warm-up), ``bytes`` (ciphertexts up and down
per request; ``bytes_keys`` apart), ``rounds`` = 1, and ``max_abs_err`` against the
plaintext reference (plus ``accuracy`` = argmax agreement for classifiers). Forests are
rows with ``supported = false`` and the reason (routed to mpc).

Workloads come from :func:`suite` (seeded; the names of issue 12). The combined benchmark
(``veil bench inference``) calls :func:`run_rows`; run alone with
``python -m veil.bench._inference_fhe --json PATH [--quick] [--peers]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Workload", "suite", "fhe_row", "run_rows", "concrete_rows", "run", "targets",
           "CONCRETE_REFERENCE"]

# Concrete-ML 1.9.0 medians measured on this machine when the issue was filed (seconds per
# sample): context only; targets are judged against a peer run in the same benchmark run.
CONCRETE_REFERENCE = {
    "linreg-10": 0.012, "linreg-500": 0.116, "relu-8": 3.6, "gelu-8": 3.9, "sigmoid-8": 3.9,
    "matmul-100": 3.8, "mlp-1k": 0.7, "mlp-10k": 6.5, "cnn-8x8": 55.0, "rf-10x10": 6.5,
}


@dataclass
class Workload:
    """A model, the inputs of one request, and calibration inputs."""

    name: str
    model: Any
    inputs: np.ndarray
    calibration: np.ndarray
    labels: np.ndarray | None = None
    train_y: np.ndarray | None = None  # forests: targets the peer retrains on (calibration = X)


def _linreg(f: int, batch: int, rng: np.random.Generator) -> tuple[Any, np.ndarray, np.ndarray]:
    from sklearn.linear_model import LinearRegression

    from veil.models.ir import from_sklearn

    x = rng.normal(size=(max(200, 2 * f), f))
    y = x @ rng.normal(size=f) + rng.normal(scale=0.1, size=len(x))
    model = from_sklearn(LinearRegression().fit(x, y), name=f"linreg-{f}")
    return model, rng.normal(size=(batch, f)), x


def _activation(kind: str, n: int, rng: np.random.Generator) -> Workload:
    from veil.models.ir import GELU, Model, ReLU, Sigmoid

    layer: Any = {"relu": ReLU, "gelu": GELU, "sigmoid": Sigmoid}[kind]()
    calib = rng.uniform(-4, 4, size=(2000, 1))
    if n <= 64:  # one vector per ciphertext
        model = Model((n,), (layer,), name=f"{kind}-{n}")
        return Workload(f"{kind}-{n}", model, rng.uniform(-4, 4, size=(1, n)),
                        calib.reshape(-1, n) if 2000 % n == 0 else rng.uniform(-4, 4, (200, n)))
    # a long vector: its values packed densely over the slots of a few ciphertexts
    model = Model((1,), (layer,), name=f"{kind}-{n}")
    return Workload(f"{kind}-{n}", model, rng.uniform(-4, 4, size=(n, 1)), calib)


def _mlp(hidden: int, name: str) -> Workload:
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    from veil.models.ir import from_sklearn

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((hidden,), max_iter=200, random_state=0).fit(x[:1500], y[:1500])
    return Workload(name, from_sklearn(est, name=name), x[1500:1501], x[:1500], y[1500:1501])


def suite(quick: bool = False) -> list[Workload]:
    """Issue 12's workloads (``quick``: one size of each kind)."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    from veil.models.ir import Linear, Model, from_sklearn
    from veil.securecompute.recommend_models import NAMED_MODELS

    rng = np.random.default_rng(12)
    out: list[Workload] = []
    for n in (10,) if quick else (10, 50, 100):
        b = rng.normal(size=(n, n))
        model = Model((n,), (Linear(b.T, np.zeros(n)),), name=f"matmul-{n}")  # A @ B, B clear
        a = rng.normal(size=(n, n))
        out.append(Workload(f"matmul-{n}", model, a, rng.normal(size=(64, n))))
    for kind in ("relu", "gelu", "sigmoid"):
        for n in (8,) if quick else (8, 16, 32, 10000):
            out.append(_activation(kind, n, rng))
    for f in (10,) if quick else (10, 50, 100, 250, 500):
        model, x, calib = _linreg(f, 1, rng)
        out.append(Workload(f"linreg-{f}", model, x, calib))
    for f in (10,) if quick else (10, 50, 100, 250, 500):
        model, x, calib = _linreg(f, 1000, rng)
        out.append(Workload(f"linreg-b1000-{f}", model, x, calib))
    for hidden, name in ((16, "mlp-1k"),) if quick else ((16, "mlp-1k"), (64, "mlp-5k"),
                                                         (128, "mlp-10k")):
        out.append(_mlp(hidden, name))
    cnn = NAMED_MODELS["digits-cnn"]()
    out.append(Workload("cnn-8x8", cnn.model, cnn.inputs[:1], cnn.calibration))
    if not quick:
        out.append(Workload("cnn-8x8-b50", cnn.model, cnn.inputs[:50], cnn.calibration))
    xd, yd = load_diabetes(return_X_y=True)
    for est_n, feat in ((10, 10),) if quick else ((10, 10), (50, 10)):
        xs = np.hstack([xd, rng.normal(size=(len(xd), max(0, feat - xd.shape[1])))])[:, :feat]
        rf = RandomForestRegressor(n_estimators=est_n, max_depth=4, random_state=0).fit(xs, yd)
        out.append(Workload(f"rf-{est_n}x{feat}", from_sklearn(rf), xs[:1], xs, train_y=yd))
    return out


def fhe_row(w: Workload, repeats: int = 3) -> dict[str, Any]:
    """Measure one workload under CKKS (a row of the combined JSON)."""
    from veil.models.ir import UnsupportedModelError, evaluate
    from veil.securecompute.fhe.run import run_inference

    row: dict[str, Any] = {"workload": w.name, "backend": "fhe", "batch": len(w.inputs)}
    try:
        r = run_inference(w.model, w.inputs, w.calibration, repeats=repeats)
    except UnsupportedModelError as e:
        row.update(supported=False, reason=str(e))
        return row
    want = evaluate(w.model, w.inputs).reshape(len(w.inputs), -1)
    got = r.outputs[:, : want.shape[1]]
    row.update(
        supported=True, latency_s=r.latency_s, setup_s=r.setup_s, input_s=r.encrypt_s,
        reveal_s=r.decrypt_s, encrypt_s=r.encrypt_s, server_s=r.server_s,
        decrypt_s=r.decrypt_s, bytes=r.bytes_up + r.bytes_down, bytes_up=r.bytes_up,
        bytes_down=r.bytes_down, bytes_keys=r.bytes_keys, rounds=1,
        max_abs_err=float(np.max(np.abs(got - want))),
        ring=r.report.get("poly_degree_n"), depth=r.report.get("depth"),
        rotation_keys=r.report.get("rotation_keys"), layout=r.report.get("layout"),
        approximation=r.report.get("approximation"),
    )
    if w.model.task == "classification" and want.shape[1] > 1:
        row["accuracy"] = float(np.mean(got.argmax(1) == want.argmax(1)))
    return row


def run_rows(workloads: list[Workload] | None = None, quick: bool = False,
             repeats: int = 3, log: Any = None) -> list[dict[str, Any]]:
    """Rows for every workload (the combined benchmark's entry point for ``fhe``)."""
    rows = []
    for w in workloads if workloads is not None else suite(quick):
        t0 = time.perf_counter()
        rows.append(fhe_row(w, repeats=repeats))
        if log is not None:
            r = rows[-1]
            log(f"fhe {w.name}: " + (f"{r['latency_s'] * 1e3:.1f} ms" if r.get("supported")
                                      else "unsupported") + f" ({time.perf_counter() - t0:.0f}s)")
    return rows


def concrete_rows(workloads: list[Workload], quick: bool = False,
                  log: Any = None) -> list[dict[str, Any]]:
    """Concrete-ML's rows for the combined benchmark (a peer registered like a backend).

    Without its venv: one row per workload saying so (no numbers are invented)."""
    c = run_concrete(workloads)
    if log is not None:
        log(f"concrete-ml: {c['status'][:200]}; ran {len(c.get('ran', []))} of {len(workloads)}")
    if not c.get("rows"):
        return [{"workload": w.name, "backend": "concrete-ml", "supported": False,
                 "reason": c["status"][:300]} for w in workloads]
    return list(c["rows"])


def concrete_python() -> Path | None:
    """The Concrete-ML venv's python (``.peers/concrete``), if set up."""
    from veil.bench._peers import repo_root

    for base in (Path.cwd(), repo_root()):
        p = base / ".peers" / "concrete" / "bin" / "python"
        if p.exists():
            return p
    return None


def export_spec(workloads: list[Workload], path: Path) -> None:
    """Write the workloads (layers + weights, inputs, calibration) as one .npz for the peer."""
    from veil.models.ir import (GELU, Argmax, AvgPool2d, Conv2d, Flatten, Linear, ReLU, Sigmoid,
                                Softmax, Tanh, TreeEnsemble)

    arrays: dict[str, np.ndarray] = {}
    spec = []
    for k, w in enumerate(workloads):
        item: dict[str, Any] = {"name": w.name, "x": f"{k}_x", "calib": f"{k}_c",
                                "classification": w.model.task == "classification"}
        arrays[f"{k}_x"] = np.asarray(w.inputs, dtype=np.float64)
        arrays[f"{k}_c"] = np.asarray(w.calibration, dtype=np.float64)[:500]
        layers: list[dict[str, Any]] = []
        for j, layer in enumerate(w.model.layers):
            key = f"{k}_{j}"
            if isinstance(layer, Linear):
                arrays[key + "w"], arrays[key + "b"] = layer.weight, layer.bias
                layers.append({"type": "linear", "w": key + "w", "b": key + "b"})
            elif isinstance(layer, Conv2d):
                arrays[key + "w"], arrays[key + "b"] = layer.weight, layer.bias
                layers.append({"type": "conv", "w": key + "w", "b": key + "b",
                               "stride": list(layer.stride), "padding": list(layer.padding)})
            elif isinstance(layer, AvgPool2d):
                layers.append({"type": "avgpool", "kernel": list(layer.kernel),
                               "stride": list(layer.stride)})
            elif isinstance(layer, TreeEnsemble):
                arrays[f"{k}_c"] = np.asarray(w.calibration, dtype=np.float64)
                from veil.models.ir import evaluate

                y = w.train_y if w.train_y is not None else evaluate(w.model, w.calibration)
                arrays[f"{k}_y"] = np.asarray(y, dtype=np.float64).reshape(len(w.calibration))
                item.update(forest={"n_estimators": layer.n_trees}, y=f"{k}_y")
            elif isinstance(layer, Softmax | Argmax):
                continue
            else:
                names = {ReLU: "relu", GELU: "gelu", Sigmoid: "sigmoid", Tanh: "tanh",
                         Flatten: "flatten"}
                layers.append({"type": names[type(layer)]})
        item["layers"] = layers
        spec.append(item)
    arrays["__spec__"] = np.array(json.dumps(spec))
    np.savez(path, **arrays)  # type: ignore[arg-type]


def _concrete_order(w: Workload) -> tuple[int, int]:
    """Cheap workloads first (Concrete-ML executes a batch one sample at a time)."""
    heavy = w.name.startswith(("cnn", "mlp-10k", "mlp-5k", "rf-50")) or "10000" in w.name
    return (len(w.inputs) > 1 or heavy, len(w.inputs))


def run_concrete(workloads: list[Workload], per_workload_s: int = 300,
                 budget_s: int = 2100) -> dict[str, Any]:
    """Run benchmarks/peers/concrete_bench.py in its venv, one process per workload, each
    under ``per_workload_s`` and all within ``budget_s`` (cheap workloads first); never raises.

    Every workload gets a row: measured, or ``supported = false`` with the reason (timed out
    at the per-workload limit, failed with the log tail, or not started: budget spent).
    ``status`` is ``ok`` when at least one workload ran; ``ran`` lists them.
    """
    from veil.bench._peers import repo_root

    py = concrete_python()
    if py is None:
        return {"status": "not installed (run benchmarks/peers/setup_concrete.sh)", "rows": []}
    script = repo_root() / "benchmarks" / "peers" / "concrete_bench.py"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    def miss(w: Workload, why: str) -> dict[str, Any]:
        return {"workload": w.name, "backend": "concrete-ml", "supported": False,
                "reason": why[:300]}

    for w in sorted(workloads, key=_concrete_order):
        left = budget_s - (time.perf_counter() - t_start)
        if left < 30:
            rows.append(miss(w, f"not run: the peer's time budget of {budget_s} s was spent"))
            continue
        limit = int(min(per_workload_s, left))
        with tempfile.TemporaryDirectory() as tmp:
            out, spec = Path(tmp) / "concrete.json", Path(tmp) / "spec.npz"
            export_spec([w], spec)
            cmd = [str(py), str(script), "--spec", str(spec), "--out", str(out)]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                                      env=env, cwd=tmp, check=False)
            except subprocess.TimeoutExpired:
                rows.append(miss(w, f"timed out after {limit} s (per-workload limit; includes "
                                    "Concrete-ML's import, compilation and key generation)"))
                continue
            if proc.returncode != 0 or not out.exists():
                rows.append(miss(w, "failed: " + (proc.stderr or proc.stdout)[-250:]))
                continue
            got = json.loads(out.read_text()).get("rows", [])
            for r in got:
                r["wall_s"] = time.perf_counter() - t0
            rows += got or [miss(w, "no row written")]
    ran = [r["workload"] for r in rows if "latency_s" in r]
    return {"status": "ok" if ran else "no workload finished", "rows": rows, "ran": ran,
            "per_workload_s": per_workload_s, "budget_s": budget_s,
            "wall_s": time.perf_counter() - t_start}


def _per_request(r: dict[str, Any]) -> float:
    """A row's whole per-request latency (mpc and SPU: input + online + reveal; fhe's and
    Concrete-ML's ``latency_s`` already include encryption and decryption)."""
    if r["backend"] in ("mpc", "spu"):
        return float(r["latency_s"]) + float(r.get("input_s", 0)) + float(r.get("reveal_s", 0))
    return float(r["latency_s"])


def _as_accurate(f: dict[str, Any], peer: dict[str, Any]) -> bool:
    if "accuracy" in f and "accuracy" in peer:
        return bool(f["accuracy"] >= peer["accuracy"])
    return bool(f.get("max_abs_err", 0.0) <= max(peer.get("max_abs_err", 0.0), 1e-3))


def peer_targets(rows: list[dict[str, Any]]) -> tuple[dict[str, bool], dict[str, str]]:
    """Issue 13's targets, from the rows of ONE run (never from reference numbers).

    * ``fhe_2x_concrete:<w>`` — for every workload the fhe backend supports: its latency at
      most half of Concrete-ML's, at equal or better accuracy. Concrete-ML not measured for
      the workload (not installed, timed out, failed) → False, and the source says why.
    * ``best_2x_peers:<w>`` — for every workload: veil's faster backend (mpc and SPU per
      request = input + online + reveal; fhe = encrypt + server + decrypt) at most half the
      faster of SPU and Concrete-ML, both measured in this run; a peer missing → False with
      the reason.

    Returns the mapping and, per target, the numbers or the reason.
    """
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["workload"], {})[r["backend"]] = r
    met: dict[str, bool] = {}
    src: dict[str, str] = {}

    def ok(r: dict[str, Any] | None) -> bool:
        return r is not None and r.get("supported", True) and "latency_s" in r

    def why(name: str, r: dict[str, Any] | None) -> str:
        return f"{name} not measured in this run: " + (
            str(r.get("reason", "no row"))[:160] if r else "no row")

    for w, b in by.items():
        f, c, spu = b.get("fhe"), b.get("concrete-ml"), b.get("spu")
        if ok(f):
            key = f"fhe_2x_concrete:{w}"
            if ok(c):
                assert f is not None and c is not None
                met[key] = bool(2 * _per_request(f) <= _per_request(c) and _as_accurate(f, c))
                src[key] = (f"fhe {_per_request(f) * 1e3:.2f} ms vs concrete-ml "
                            f"{_per_request(c) * 1e3:.2f} ms (same run)")
            else:
                met[key], src[key] = False, why("concrete-ml", c)
        mine = [r for r in (b.get("mpc"), f) if ok(r)]
        if not mine:
            continue
        best = min(mine, key=_per_request)
        key = f"best_2x_peers:{w}"
        missing = [why(n, r) for n, r in (("spu", spu), ("concrete-ml", c)) if not ok(r)]
        if missing:
            met[key], src[key] = False, "; ".join(missing)
            continue
        assert spu is not None and c is not None
        peer = min((spu, c), key=_per_request)
        met[key] = bool(2 * _per_request(best) <= _per_request(peer))
        src[key] = (f"{best['backend']} {_per_request(best) * 1e3:.2f} ms vs {peer['backend']} "
                    f"{_per_request(peer) * 1e3:.2f} ms (same run)")
    return met, src


def targets(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """The mapping of :func:`peer_targets`."""
    return peer_targets(rows)[0]


def matvec_vs_tenseal(repeats: int = 5) -> dict[str, Any]:
    """A 64x10 encrypted-vector x clear-matrix product: veil's BSGS kernel vs TenSEAL's
    ``CKKSVector.matmul``, same ring (N = 8192), medians over ``repeats``."""
    import tenseal as ts

    from veil.crypto.ckks import Evaluator, KeyOwner, choose_params
    from veil.securecompute.fhe.matvec import DenseMap, tile

    rng = np.random.default_rng(0)
    w, x = rng.normal(size=(10, 64)), rng.normal(size=64)
    p = choose_params(1, scale_bits=30, min_slots=4096)
    dm = DenseMap(w, np.zeros(10), 64, p.slots, p.slots, final=True)
    owner = KeyOwner(p, dm.steps)
    ev = Evaluator(owner.evaluation_keys())
    (c,) = ev.load(owner.encrypt([tile(x, 64, p.slots, p.slots)]))
    dm.apply(ev, c)
    veil_t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        z = dm.apply(ev, c)
        veil_t.append(time.perf_counter() - t0)
    (out,) = owner.decrypt(ev.dump([z]))
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 60])
    ctx.global_scale = 2**40
    ctx.generate_galois_keys()
    v = ts.ckks_vector(ctx, x.tolist())
    ts_t = []
    for _ in range(max(2, repeats // 2)):
        t0 = time.perf_counter()
        r = v.matmul(w.T.tolist())
        ts_t.append(time.perf_counter() - t0)
    med_v, med_t = float(np.median(veil_t)), float(np.median(ts_t))
    return {"veil_s": med_v, "tenseal_s": med_t, "speedup": med_t / med_v,
            "veil_rotations": dm.rotations, "ring": p.poly_degree,
            "veil_max_abs_err": float(np.max(np.abs(out[:10] - w @ x))),
            "tenseal_max_abs_err": float(np.max(np.abs(np.array(r.decrypt()) - w @ x)))}


def _mean_ms(fn: Any, repeats: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e3


def ckks_op_costs(repeats: int = 20) -> list[dict[str, Any]]:
    """Mean times (ms) of the CKKS operations a request is made of, for the depth-1 chain a
    dense map used to get ([39, 31, 39], N = 4096) and the depth-0 one it gets now
    ([54, 54]): encrypt (+ serialise), load, rotate, plaintext product, dump, decrypt."""
    from veil.crypto.ckks import CkksParams, Evaluator, KeyOwner

    out = []
    for p in (CkksParams(4096, (39, 31, 39), 31), CkksParams(4096, (54, 54), 24)):
        owner = KeyOwner(p, [1, 2, 4, 8])
        ev = Evaluator(owner.evaluation_keys())
        x = np.arange(p.slots) * 1e-3
        blob = owner.encrypt([x])
        (c,) = ev.load(blob)
        pt = ev.encode(x, c, scale=2.0**20)
        down = ev.dump([c])
        ops = {"encrypt_ms": lambda o=owner, v=x: o.encrypt([v]),
               "load_ms": lambda e=ev, b=blob: e.load(b),
               "rotate_ms": lambda e=ev, ct=c: e.rotate(ct, 1),
               "mul_plain_ms": lambda e=ev, ct=c, q=pt: e.mul_plain(ct, q, rescale=False),
               "dump_ms": lambda e=ev, ct=c: e.dump([ct]),
               "decrypt_ms": lambda o=owner, d=down: o.decrypt(d)}
        out.append({"coeff_bits": list(p.coeff_bits), "bytes_up": len(blob),
                    "bytes_down": len(down),
                    **{k: _mean_ms(fn, repeats) for k, fn in ops.items()}})
    return out


def run(quick: bool = False, peers: bool = False, log: Any = print) -> dict[str, Any]:
    """The fhe suite (and Concrete-ML side by side with ``peers``) as one result dict."""
    from veil.bench._machine import machine_info

    load = os.getloadavg()
    ws = suite(quick)
    rows = run_rows(ws, quick=quick, log=log)
    peer_status = {}
    if peers:
        c = run_concrete(ws)
        peer_status["concrete-ml"] = c["status"]
        rows += c.get("rows", [])
    return {
        "benchmark": "inference", "backends": ["fhe"] + (["concrete-ml"] if peers else []),
        "machine": machine_info(), "load_before": load, "load_after": os.getloadavg(),
        "results": rows, "peers": peer_status, "concrete_reference_issue": CONCRETE_REFERENCE,
        "kernel_matvec_64x10": matvec_vs_tenseal(), "ckks_op_costs": ckks_op_costs(),
        "targets_met": targets(rows),
    }


def record_forest_probe(json_path: str, mpc_json: str | None = None) -> list[dict[str, Any]]:
    """Measure rf-10x10 under CKKS (:func:`veil.securecompute.fhe.forest_probe.measure_forest`)
    and write the record the fhe refusal quotes; ``mpc_json``: a benchmark JSON whose mpc
    forest rows give the mpc time beside it."""
    from veil.bench._machine import machine_info
    from veil.securecompute.fhe.forest_probe import measure_forest

    mpc: dict[str, float] = {}
    if mpc_json:
        for row in json.loads(Path(mpc_json).read_text())["results"]:
            if row["backend"] == "mpc" and row["workload"].startswith("rf-"):
                mpc[row["workload"]] = (row["latency_s"] + row.get("input_s", 0)
                                        + row.get("reveal_s", 0))
    out = []
    for w in suite(False):
        if w.name == "rf-10x10":
            rec = {"workload": w.name, **measure_forest(w.model, w.inputs, w.calibration)}
            many = measure_forest(w.model, w.calibration[:300], w.calibration, time_ckks=False)
            rec["max_abs_err_300"] = many["max_abs_err"]
            rec["margin_below_eps_fraction_300"] = many["margin_below_eps_fraction"]
            rec["mpc_s"] = mpc.get(w.name)
            out.append(rec)
    Path(json_path).write_text(json.dumps(
        {"forests": out, "machine": machine_info(), "loadavg": open("/proc/loadavg").read(),
         "command": "python -m veil.bench._inference_fhe --forest-probe PATH [--mpc-json B]"},
        indent=1, default=float))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peers", action="store_true", help="also run Concrete-ML (its venv)")
    ap.add_argument("--only", help="comma-separated workload names")
    ap.add_argument("--forest-probe", metavar="PATH", help="measure rf-10x10 under CKKS only")
    ap.add_argument("--mpc-json", help="with --forest-probe: a benchmark JSON with mpc rows")
    a = ap.parse_args(argv)
    if a.forest_probe:
        print(json.dumps(record_forest_probe(a.forest_probe, a.mpc_json), indent=1, default=float))
        return 0
    res = run(quick=a.quick, peers=a.peers) if not a.only else None
    if a.only:
        from veil.bench._machine import machine_info

        names = set(a.only.split(","))
        ws = [w for w in suite(False) if w.name in names]
        rows = run_rows(ws, log=print)
        if a.peers:
            rows += run_concrete(ws).get("rows", [])
        res = {"benchmark": "inference", "machine": machine_info(), "results": rows,
               "load": os.getloadavg(), "targets_met": targets(rows)}
    text = json.dumps(res, indent=1, default=float)
    if a.json_path:
        Path(a.json_path).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
