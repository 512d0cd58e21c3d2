"""An IR model compiled for the MPC parties: a public plan plus the tensors to share.

:func:`compile_model` (model owner) turns a :class:`~veil.models.ir.Model` into a JSON-able
plan — layer kinds and shapes only, everything the parties may know — and the list of
ring tensors (weights, biases, tree tables) that are secret-shared once at set-up.
:func:`evaluate_plan` (each party) evaluates the plan on shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from veil.crypto.fixed import encode
from veil.crypto.replicated import Share
from veil.errors import ConfigError
from veil.models.ir import (
    GELU,
    Argmax,
    AvgPool2d,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    Model,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    TreeEnsemble,
    UnsupportedModelError,
    im2col,
    pool_windows,
)
from veil.securecompute.mpc.compare import max_argmax, relu
from veil.securecompute.mpc.engine import Engine
from veil.securecompute.mpc.poly import evaluate_piecewise, piecewise
from veil.securecompute.mpc.trees import compile_forest, evaluate_forest

__all__ = ["MpcConfig", "compile_model", "evaluate_plan"]


@dataclass(frozen=True)
class MpcConfig:
    """Engine parameters (public).

    Attributes:
        frac_bits: fixed-point fraction bits ``f``.
        compare_bits: ring of comparisons; inputs of ReLU/max/trees/activations must have
            magnitude below ``2^(compare_bits − 1 − frac_bits)`` (32768 for the defaults).
        deadline_s: a party that sends nothing for this long aborts the computation.
    """

    frac_bits: int = 16
    compare_bits: int = 32
    deadline_s: float = 30.0

    def __post_init__(self) -> None:
        if not 8 <= self.frac_bits <= 24:
            raise ConfigError("frac_bits must be in 8..24", key="mpc.frac_bits")
        if not self.frac_bits + 2 <= self.compare_bits <= 64:
            raise ConfigError("compare_bits must be in frac_bits+2..64", key="mpc.compare_bits")
        if self.deadline_s <= 0:
            raise ConfigError("deadline_s must be positive", key="mpc.deadline_s")


_ACT = {ReLU: "relu", GELU: "gelu", Sigmoid: "sigmoid", Tanh: "tanh", Softmax: "softmax",
        Argmax: "argmax", Flatten: "flatten"}


def compile_model(model: Model, cfg: MpcConfig) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The public plan (JSON-able) and the uint64 tensors to secret-share, in order.

    Raises:
        UnsupportedModelError: a layer the MPC backend cannot evaluate.
    """
    f = cfg.frac_bits
    layers: list[dict[str, Any]] = []
    tensors: list[np.ndarray] = []
    for pos, layer in enumerate(model.layers):
        if isinstance(layer, Linear):
            layers.append({"kind": "linear", "n": 2})
            tensors += [encode(layer.weight.T, f), encode(layer.bias, f)]
        elif isinstance(layer, Conv2d):
            o, c, kh, kw = layer.weight.shape
            layers.append({"kind": "conv", "n": 2, "k": [kh, kw], "out": o,
                           "stride": list(layer.stride), "padding": list(layer.padding)})
            tensors += [encode(layer.weight.reshape(o, -1).T, f), encode(layer.bias, f)]
        elif isinstance(layer, AvgPool2d | MaxPool2d):
            kind = "avgpool" if isinstance(layer, AvgPool2d) else "maxpool"
            layers.append({"kind": kind, "n": 0, "k": list(layer.kernel),
                           "stride": list(layer.stride)})
        elif isinstance(layer, TreeEnsemble):
            params, ts = compile_forest(layer, f, keyed=pos == 0)
            layers.append({"kind": "forest", "n": len(ts), **params})
            tensors += ts
        elif type(layer) in _ACT:
            layers.append({"kind": _ACT[type(layer)], "n": 0})
        else:
            raise UnsupportedModelError(f"the mpc backend cannot evaluate {type(layer).__name__}")
    plan = {"version": 1, "input_shape": list(model.input_shape), "layers": layers,
            "shapes": [list(t.shape) for t in tensors], "frac_bits": f,
            "compare_bits": cfg.compare_bits, "task": model.task,
            "input_encoding": "float32-key" if layers[0].get("keyed") else "fixed"}
    return plan, tensors


def _bcast(s: Share, shape: tuple[int, ...]) -> Share:
    return Share(np.broadcast_to(s.a, shape), np.broadcast_to(s.b, shape))


def _layer(eng: Engine, spec: dict[str, Any], w: list[Share], x: Share, bits: int) -> Share:
    kind = spec["kind"]
    f = eng.f
    if kind == "linear":
        y = eng.matmul_trunc(x, w[0])
        return eng.add(y, _bcast(w[1], y.shape))
    if kind == "conv":
        kh, kw = spec["k"]
        ca, (oh, ow) = im2col(x.a, kh, kw, tuple(spec["stride"]), tuple(spec["padding"]))
        cb, _ = im2col(x.b, kh, kw, tuple(spec["stride"]), tuple(spec["padding"]))
        y = eng.matmul_trunc(Share(ca, cb), w[0])  # (N, P, O)
        y = eng.add(y, _bcast(w[1], y.shape))
        n = x.shape[0]
        return Share(y.a.transpose(0, 2, 1).reshape(n, spec["out"], oh, ow),
                     y.b.transpose(0, 2, 1).reshape(n, spec["out"], oh, ow))
    if kind == "relu":
        return relu(eng, x, bits)
    if kind in ("sigmoid", "tanh", "gelu"):
        return evaluate_piecewise(eng, x, piecewise(kind), bits)
    if kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if kind in ("avgpool", "maxpool"):
        k, s = tuple(spec["k"]), tuple(spec["stride"])
        wa, wb = pool_windows(x.a, k, s), pool_windows(x.b, k, s)
        if kind == "avgpool":
            summed = Share(wa.sum(axis=0, dtype=np.uint64), wb.sum(axis=0, dtype=np.uint64))
            inv = int(encode(1.0 / (k[0] * k[1]), f))
            return eng.trunc(eng.scale(summed, inv))
        win = Share(np.moveaxis(wa, 0, -1), np.moveaxis(wb, 0, -1))
        return max_argmax(eng, win, bits)[0][..., 0]
    if kind == "argmax":
        _, idx = max_argmax(eng, x, bits, with_index=True)
        return eng.scale(idx, 1 << f)  # class id in fixed point
    if kind == "softmax":
        m, _ = max_argmax(eng, x, bits)
        d = eng.sub(x, _bcast(m, x.shape))  # ≤ 0
        e = evaluate_piecewise(eng, d, piecewise("exp"), bits)
        tot = Share(e.a.sum(axis=-1, keepdims=True, dtype=np.uint64),
                    e.b.sum(axis=-1, keepdims=True, dtype=np.uint64))
        r = evaluate_piecewise(eng, tot, piecewise("reciprocal"), bits)
        return eng.mul_trunc(e, _bcast(r, e.shape))
    if kind == "forest":
        return evaluate_forest(eng, x, spec, w, bits)
    raise ConfigError(f"unknown layer kind {kind!r} in the plan")


def evaluate_plan(eng: Engine, plan: dict[str, Any], weights: list[Share], x: Share) -> Share:
    """Evaluate the plan on shares; rounds and bytes are counted per layer kind."""
    bits = int(plan["compare_bits"])
    pos = 0
    for spec in plan["layers"]:
        w = weights[pos : pos + spec["n"]]
        pos += spec["n"]
        with eng.op(spec["kind"]):
            x = _layer(eng, spec, w, x, bits)
    return x
