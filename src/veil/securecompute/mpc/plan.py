"""Model owner side: an IR model compiled into a public plan and the tensors to share.

:func:`compile_model` turns a :class:`~veil.models.ir.Model` into a JSON-able plan — layer
kinds and shapes only, everything the parties may know — and the list of ring tensors
(weights, biases, tree tables) that are secret-shared once at set-up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from veil.crypto.fixed import encode
from veil.models.ir import (
    PLAIN_KINDS,
    AvgPool2d,
    Conv2d,
    Linear,
    MaxPool2d,
    Model,
    TreeEnsemble,
    UnsupportedModelError,
)
from veil.securecompute.mpc.program import MpcConfig
from veil.securecompute.mpc.trees import compile_forest

__all__ = ["compile_model"]


_ACT = {v: k for k, v in PLAIN_KINDS.items()}


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


