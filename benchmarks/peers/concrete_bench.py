"""Concrete-ML 1.9.0 on the private-inference suite (runs in .peers/concrete, never in veil's venv).

veil exports each workload (layer list with weights, the request inputs, calibration inputs)
to an .npz spec (``veil.bench._inference_fhe.export_spec``); this script rebuilds the same
model in torch, compiles it with ``compile_torch_model`` (post-training quantisation,
``n_bits``), generates keys (timed as ``setup_s``), and times ``forward(x, fhe="execute")`` per
request (``latency_s``, median). Forests are trained by Concrete-ML's RandomForestRegressor on
the same data. Output: ``{"rows": [...]}`` in the combined schema with ``backend =
"concrete-ml"``.

Shims for torch 2.13 (Concrete-ML 1.9.0 was built for torch 2.3.1):
* ``torch.onnx.export`` is called with ``dynamo=False`` (2.13 defaults to the dynamo exporter,
  which Concrete-ML's ONNX import does not read);
* ``Tensor.rename`` (named tensors, gone in 2.13) is an identity for unnamed tensors, which is
  all brevitas uses it for.

Usage: .peers/concrete/bin/python benchmarks/peers/concrete_bench.py --spec SPEC.npz --out OUT
       .peers/concrete/bin/python benchmarks/peers/concrete_bench.py --check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _shims() -> None:
    import torch

    orig = torch.onnx.export

    def export(*a, **k):
        k.setdefault("dynamo", False)
        return orig(*a, **k)

    torch.onnx.export = export
    if not hasattr(torch.Tensor, "rename"):
        torch.Tensor.rename = lambda self, *a, **k: self  # type: ignore[attr-defined]


def _torch_model(layers: list[dict], arrays) -> object:
    import torch

    mods = []
    for spec in layers:
        t = spec["type"]
        if t == "linear":
            w = torch.tensor(arrays[spec["w"]], dtype=torch.float32)
            m = torch.nn.Linear(w.shape[1], w.shape[0])
            m.weight.data, m.bias.data = w, torch.tensor(arrays[spec["b"]], dtype=torch.float32)
        elif t == "conv":
            w = torch.tensor(arrays[spec["w"]], dtype=torch.float32)
            m = torch.nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]),
                                stride=tuple(spec["stride"]), padding=tuple(spec["padding"]))
            m.weight.data, m.bias.data = w, torch.tensor(arrays[spec["b"]], dtype=torch.float32)
        elif t == "avgpool":
            m = torch.nn.AvgPool2d(tuple(spec["kernel"]), tuple(spec["stride"]))
        else:
            m = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "sigmoid": torch.nn.Sigmoid,
                 "tanh": torch.nn.Tanh, "flatten": torch.nn.Flatten}[t]()
        mods.append(m)
    return torch.nn.Sequential(*mods).eval()


def _time_requests(fn, x, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run_workload(w: dict, arrays, n_bits: int, repeats: int) -> dict:
    import numpy as np

    row = {"workload": w["name"], "backend": "concrete-ml", "batch": int(arrays[w["x"]].shape[0])}
    x = arrays[w["x"]].astype(np.float32)
    calib = arrays[w["calib"]].astype(np.float32)
    t0 = time.perf_counter()
    if w.get("forest"):
        from concrete.ml.sklearn import RandomForestRegressor

        est = RandomForestRegressor(n_estimators=w["forest"]["n_estimators"], max_depth=4,
                                    n_bits=n_bits, random_state=0)
        est.fit(calib, arrays[w["y"]])
        est.compile(calib)
        est.fhe_circuit.keygen()
        setup = time.perf_counter() - t0
        lat, out = _time_requests(lambda v: est.predict(v, fhe="execute"), x, repeats)
        ref = est.predict(x)
    else:
        from concrete.ml.torch.compile import compile_torch_model

        model = _torch_model(w["layers"], arrays)
        qm = compile_torch_model(model, calib, n_bits=n_bits, rounding_threshold_bits=n_bits + 2)
        qm.fhe_circuit.keygen()
        setup = time.perf_counter() - t0
        lat, out = _time_requests(lambda v: qm.forward(v, fhe="execute"), x, repeats)
        import torch

        ref = model(torch.tensor(x)).detach().numpy()
    out = np.asarray(out).reshape(len(x), -1)
    ref = np.asarray(ref).reshape(len(x), -1)
    row.update(supported=True, latency_s=lat, setup_s=setup, rounds=1, n_bits=n_bits,
               max_abs_err=float(np.max(np.abs(out - ref))))
    if w.get("classification") and ref.shape[1] > 1:
        row["accuracy"] = float(np.mean(out.argmax(1) == ref.argmax(1)))
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec")
    ap.add_argument("--out")
    ap.add_argument("--n-bits", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    _shims()
    if a.check:
        import concrete.ml
        import torch

        print("concrete-ml", concrete.ml.__version__, "torch", torch.__version__)
        return 0
    import numpy as np

    arrays = np.load(a.spec, allow_pickle=False)
    spec = json.loads(str(arrays["__spec__"]))
    rows = []
    for w in spec:
        t0 = time.perf_counter()
        try:
            rows.append(run_workload(w, arrays, a.n_bits, a.repeats))
        except Exception as e:  # a peer failure is a row, not a crash
            rows.append({"workload": w["name"], "backend": "concrete-ml", "supported": False,
                         "reason": f"{type(e).__name__}: {e}"[:300]})
        print(w["name"], rows[-1].get("latency_s"), f"({time.perf_counter() - t0:.0f}s)",
              file=sys.stderr, flush=True)
    with open(a.out, "w") as f:
        json.dump({"rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
