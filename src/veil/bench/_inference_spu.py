"""SPU (SecretFlow-SPU 0.9.5, ABY3/FM64) on the private-inference suite, side by side.

:func:`run_spu` writes the workloads (layers, weights, padded forests, inputs and the
plaintext outputs) to one ``.npz`` and runs ``benchmarks/peers/spu_bench.py`` with the
isolated venv's python (``.peers/spu``, made by ``benchmarks/peers/setup_spu.sh``). SPU is
never imported here.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["spu_python", "export", "run_spu"]


def spu_python() -> Path | None:
    """The SPU venv's python, if set up."""
    from veil.bench._peers import repo_root

    for base in (Path.cwd(), repo_root()):
        p = base / ".peers" / "spu" / "bin" / "python"
        if p.exists():
            return p
    return None


def export(workloads: list[Any], path: Path) -> None:
    """Write the suite for the peer script (no pickles: arrays + a JSON spec)."""
    from veil.models.ir import (
        GELU, Argmax, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sigmoid, Softmax,
        Tanh, TreeEnsemble, evaluate,
    )
    from veil.securecompute.mpc.trees import padded_forest

    simple = {ReLU: "relu", GELU: "gelu", Sigmoid: "sigmoid", Tanh: "tanh", Flatten: "flatten",
              Softmax: "softmax"}
    arrays: dict[str, np.ndarray] = {}
    spec: list[dict[str, Any]] = []
    for k, w in enumerate(workloads):
        item: dict[str, Any] = {"name": w.name, "x": f"x{k}", "want": f"y{k}",
                                "classification": w.model.task == "classification"}
        arrays[f"x{k}"] = np.asarray(w.inputs, dtype=np.float64)
        arrays[f"y{k}"] = evaluate(w.model, w.inputs).reshape(len(w.inputs), -1)
        layers: list[dict[str, Any]] = []
        params: list[str] = []
        for j, layer in enumerate(w.model.layers):
            key = f"p{k}_{j}"
            if isinstance(layer, TreeEnsemble):
                depth, sel, thr, leaves = padded_forest(layer)
                arrays[key + "s"], arrays[key + "t"], arrays[key + "l"] = sel, thr, leaves
                item["forest"] = {"depth": depth, "arrays": [key + "s", key + "t", key + "l"]}
            elif isinstance(layer, Linear | Conv2d):
                arrays[key + "w"], arrays[key + "b"] = layer.weight, layer.bias
                params += [key + "w", key + "b"]
                entry: dict[str, Any] = {"type": "linear" if isinstance(layer, Linear) else "conv"}
                if isinstance(layer, Conv2d):
                    entry.update(stride=list(layer.stride), padding=list(layer.padding))
                layers.append(entry)
            elif isinstance(layer, AvgPool2d | MaxPool2d):
                layers.append({"type": "avgpool" if isinstance(layer, AvgPool2d) else "maxpool",
                               "kernel": list(layer.kernel), "stride": list(layer.stride)})
            elif isinstance(layer, Argmax):
                continue
            else:
                layers.append({"type": simple[type(layer)]})
        item.update(layers=layers, params=params)
        spec.append(item)
    arrays["__spec__"] = np.array(json.dumps(spec))
    np.savez(path, **arrays)


def run_spu(workloads: list[Any], quick: bool = False, timeout_s: int = 5400) -> dict[str, Any]:
    """SPU's rows for ``workloads``; never raises (``status`` says what happened)."""
    from veil.bench._peers import repo_root

    py = spu_python()
    if py is None:
        return {"status": "not installed (run benchmarks/peers/setup_spu.sh)", "rows": []}
    script = repo_root() / "benchmarks" / "peers" / "spu_bench.py"
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "spec.npz", Path(tmp) / "spu.json"
        export(workloads, spec)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(OMP_NUM_THREADS="1", XLA_FLAGS="--xla_cpu_multi_thread_eigen=false")
        cmd = [str(py), str(script), "--spec", str(spec), "--out", str(out),
               "--repeats", "2" if quick else "5"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                  env=env, cwd=tmp, check=False)
        except subprocess.TimeoutExpired:
            return {"status": f"timed out after {timeout_s} s", "rows": []}
        if proc.returncode != 0 or not out.exists():
            return {"status": f"failed (exit {proc.returncode})",
                    "log_tail": (proc.stderr or proc.stdout)[-1500:], "rows": []}
        res: dict[str, Any] = json.loads(out.read_text())
    res["status"] = "ok"
    res["command"] = (".peers/spu/bin/python benchmarks/peers/spu_bench.py --spec SPEC --out OUT "
                      f"--repeats {'2' if quick else '5'}")
    return res
