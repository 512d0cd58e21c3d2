"""Save and load IR models as ``.npz`` (numpy arrays + a JSON description; no pickles)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from veil.errors import ConfigError
from veil.models.ir.layers import (
    PLAIN_KINDS,
    AvgPool2d,
    Conv2d,
    Layer,
    Linear,
    MaxPool2d,
    TreeEnsemble,
)
from veil.models.ir.model import Model

__all__ = ["save", "load"]

_NAMES = {v: k for k, v in PLAIN_KINDS.items()}
_TREE = ("features", "thresholds", "lefts", "rights", "values")


def save(model: Model, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``path`` (``.npz``). Returns the path written."""
    arrays: dict[str, np.ndarray] = {}
    desc: list[dict[str, Any]] = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Linear | Conv2d):
            arrays[f"{i}.w"], arrays[f"{i}.b"] = layer.weight, layer.bias
            d: dict[str, Any] = {"type": "linear" if isinstance(layer, Linear) else "conv2d"}
            if isinstance(layer, Conv2d):
                d.update(stride=list(layer.stride), padding=list(layer.padding))
        elif isinstance(layer, AvgPool2d | MaxPool2d):
            d = {"type": "avgpool2d" if isinstance(layer, AvgPool2d) else "maxpool2d",
                 "kernel": list(layer.kernel), "stride": list(layer.stride)}
        elif isinstance(layer, TreeEnsemble):
            d = {"type": "trees", "n_trees": layer.n_trees, "n_features": layer.n_features,
                 "kind": layer.kind, "classes": list(layer.classes)}
            for field in _TREE:
                for t, arr in enumerate(getattr(layer, field)):
                    arrays[f"{i}.{field}.{t}"] = arr
        else:
            d = {"type": _NAMES[type(layer)]}
        desc.append(d)
    meta = {"format": "veil-ir", "version": 1, "input_shape": list(model.input_shape),
            "task": model.task, "name": model.name, "layers": desc}
    p = Path(path)
    with open(p, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
    return p


def load(path: str | os.PathLike[str]) -> Model:
    """Read a model written by :func:`save`.

    Raises:
        ConfigError: missing file, not a veil IR file, or an unknown layer type.
    """
    try:
        data = np.load(Path(path), allow_pickle=False)
        meta = json.loads(str(data["__meta__"]))
    except (OSError, KeyError, ValueError) as e:
        raise ConfigError(f"{path} is not a veil model file ({type(e).__name__}); save one "
                          "with veil.models.ir.save") from None
    if meta.get("format") != "veil-ir":
        raise ConfigError(f"{path} is not a veil model file")
    layers: list[Layer] = []
    for i, d in enumerate(meta["layers"]):
        t = d["type"]
        if t == "linear":
            layers.append(Linear(data[f"{i}.w"], data[f"{i}.b"]))
        elif t == "conv2d":
            layers.append(Conv2d(data[f"{i}.w"], data[f"{i}.b"], tuple(d["stride"]),
                                 tuple(d["padding"])))
        elif t in ("avgpool2d", "maxpool2d"):
            cls = AvgPool2d if t == "avgpool2d" else MaxPool2d
            layers.append(cls(tuple(d["kernel"]), tuple(d["stride"])))
        elif t == "trees":
            parts = {f: tuple(data[f"{i}.{f}.{k}"] for k in range(d["n_trees"])) for f in _TREE}
            layers.append(TreeEnsemble(**parts, n_features=d["n_features"], kind=d["kind"],
                                       classes=tuple(d["classes"])))
        elif t in PLAIN_KINDS:
            layers.append(PLAIN_KINDS[t]())
        else:
            raise ConfigError(f"{path}: unknown layer type {t!r}")
    return Model(tuple(meta["input_shape"]), tuple(layers), task=meta["task"], name=meta["name"])
