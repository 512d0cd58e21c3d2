"""What a random forest would cost under CKKS: a measurement, not a guess.

The fhe backend routes tree ensembles to mpc. This module measures why, for a given forest
and inputs, with the construction CKKS would need (all nodes of all trees SIMD-packed in the
slots of one ciphertext):

1. every node's comparison ``x[f] ≤ t`` as ``s = sign((t − x[f]) / R_f)`` with the composite
   sign polynomial of :mod:`.sign` (R_f: the feature's calibrated range), then
2. each leaf's indicator as the product of ``(1 ± s)/2`` along its path (⌈log2 depth⌉
   levels as a product tree), then the leaf values summed (one plaintext product).

* **accuracy** — the circuit evaluated in plaintext (what CKKS computes, without its noise)
  against the exact forest: a node whose margin |t − x[f]| / R_f is below the sign's ε gets a
  soft decision, and the error is the forest's output error;
* **cost** — on real ciphertexts at the parameters that depth needs (128-bit): key generation,
  the composite sign on one ciphertext of node margins, and the path-product levels, timed.
  The feature-selection product and the leaf sum are not timed, so the latency is a lower
  bound.

``python -m veil.bench._inference_fhe --forest-probe PATH`` records it for the suite's
forests next to the mpc backend's measured time; :func:`forest_reason` quotes the record.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from veil.securecompute.fhe.sign import SIGN_DEGREES, SIGN_EPS, CompositeStep, composite_relu

__all__ = ["soft_forest", "measure_forest", "forest_reason", "RECORD"]

RECORD = Path(__file__).resolve().parents[4] / "benchmarks" / "fhe-forest-probe.json"


def _tree_depth(left: np.ndarray, right: np.ndarray) -> int:
    depth = {0: 0}
    for j in range(len(left)):
        if left[j] != -1:
            depth[int(left[j])] = depth[int(right[j])] = depth[j] + 1
    return max(depth.values())


def soft_forest(layer: Any, x: np.ndarray, sign: Any, ranges: np.ndarray) -> np.ndarray:
    """The CKKS forest circuit in plaintext: soft decisions ``(1 ± sign(margin))/2``
    (inputs rounded to float32 first, as the forest's definition says)."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    out = np.zeros((len(x), layer.values[0].shape[1]))
    for f, t, lf, rt, v in zip(layer.features, layer.thresholds, layer.lefts, layer.rights,
                               layer.values):
        w = np.zeros((len(x), len(lf)))
        w[:, 0] = 1.0
        for j in range(len(lf)):  # sklearn's node order: a parent precedes its children
            if lf[j] == -1:
                continue
            s = sign((t[j] - x[:, f[j]]) / ranges[f[j]])
            w[:, lf[j]] = w[:, j] * (1.0 + s) / 2.0
            w[:, rt[j]] = w[:, j] * (1.0 - s) / 2.0
        leaves = lf == -1
        out += w[:, leaves] @ v[leaves]
    return out / len(layer.features)


def measure_forest(model: Any, x: np.ndarray, calibration: np.ndarray, *,
                   time_ckks: bool = True) -> dict[str, Any]:
    """Accuracy and (lower-bound) cost of ``model``'s forest under CKKS for inputs ``x``."""
    from veil.crypto.ckks import Evaluator, KeyOwner, choose_params
    from veil.models.ir import TreeEnsemble, evaluate

    (layer,) = [la for la in model.layers if isinstance(la, TreeEnsemble)]
    calib = np.asarray(calibration, dtype=np.float64)
    ranges = np.maximum((calib.max(0) - calib.min(0)) * 1.1, 1e-9)
    relu = composite_relu(-1.0, 1.0)  # its sign polynomial; half = 1
    step = CompositeStep(relu)
    tree_depth = max(_tree_depth(lf, rt) for lf, rt in zip(layer.lefts, layer.rights))
    nodes = sum(int(np.sum(lf != -1)) for lf in layer.lefts)
    want = evaluate(model, x).reshape(len(x), -1)
    got = soft_forest(layer, x, relu.sign_t, ranges)
    margins = np.concatenate([np.abs(t[lf != -1] - x[:, f[lf != -1]]) / ranges[f[lf != -1]]
                              for f, t, lf in zip(layer.features, layer.thresholds,
                                                  layer.lefts)], axis=None)
    sign_depth = step.depth - 1
    depth = 1 + sign_depth + math.ceil(math.log2(max(2, tree_depth))) + 1
    params = choose_params(depth, scale_bits=26, integer_bits=8, min_slots=nodes)
    rec: dict[str, Any] = {
        "trees": len(layer.features), "tree_depth": tree_depth, "nodes": nodes,
        "samples": len(x), "sign_degrees": list(SIGN_DEGREES), "sign_eps": SIGN_EPS,
        "circuit_depth": depth, "ring": params.poly_degree,
        "coeff_bits": list(params.coeff_bits), "ciphertexts_per_sample": -(-nodes // params.slots),
        "max_abs_err": float(np.max(np.abs(got - want))),
        "max_rel_err": float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))),
        "margin_below_eps_fraction": float(np.mean(margins < SIGN_EPS)),
    }
    if not time_ckks:
        return rec
    t0 = time.perf_counter()
    owner = KeyOwner(params)
    ev = Evaluator(owner.evaluation_keys())
    rec["keygen_s"] = time.perf_counter() - t0
    d = np.zeros(params.slots)
    d[:nodes] = np.random.default_rng(0).uniform(-1, 1, nodes)
    (c,) = ev.load(owner.encrypt([d]))
    c = ev.mul_plain(c, 1.0)  # the feature-selection level (its product is not timed)
    t0 = time.perf_counter()
    s = c
    for coeffs in relu.polys:
        s = _poly(ev, s, coeffs)
    rec["sign_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(math.ceil(math.log2(max(2, tree_depth)))):
        s = ev.multiply(s, s)  # one product level of the path product tree
    rec["path_product_s"] = time.perf_counter() - t0
    rec["latency_lower_bound_s"] = rec["sign_s"] + rec["path_product_s"]
    (dec,) = owner.decrypt(ev.dump([s]))
    rec["decrypts"] = bool(np.all(np.isfinite(dec)))
    return rec


def _poly(ev: Any, t: Any, coeffs: tuple[float, ...]) -> Any:
    from veil.securecompute.fhe.poly import best_baby, evaluate_poly

    return evaluate_poly(ev, t, np.asarray(coeffs), best_baby(len(coeffs) - 1))


def forest_reason(record: Path | None = None) -> str:
    """Why forests go to mpc, quoting the recorded measurement where there is one."""
    base = ("tree ensembles need a comparison x[f] <= t per node; under CKKS that is a "
            "composite sign polynomial followed by a path product")
    path = record or RECORD
    try:
        data = json.loads(path.read_text())
        r = data["forests"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return base + ": deep circuits (N = 32768 rings) and approximate decisions, while " \
            "the mpc backend compares exactly in a few rounds: route forests to --backend mpc"
    mpc = f", mpc measured {r['mpc_s'] * 1e3:.0f} ms" if r.get("mpc_s") else ""
    err, on = r.get("max_abs_err_300", r["max_abs_err"]), 300 if "max_abs_err_300" in r else 1
    return (f"{base}; measured for {r['workload']} ({r['trees']} trees, {r['nodes']} nodes, "
            f"benchmarks/{path.name}): depth {r['circuit_depth']}, N = {r['ring']}, "
            f">= {r.get('latency_lower_bound_s', float('nan')):.1f} s per sample{mpc}, max error "
            f"{err:.3g} over {on} inputs vs the exact forest (mpc: exact leaves): route forests "
            "to --backend mpc")
