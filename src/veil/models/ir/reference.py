"""Plaintext reference evaluation of an IR model in numpy float64 (the ground truth the
private backends are tested against)."""

from __future__ import annotations

import math

import numpy as np

from veil.errors import ConfigError
from veil.models.ir.layers import (
    GELU,
    Argmax,
    AvgPool2d,
    Conv2d,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    TreeEnsemble,
)
from veil.models.ir.model import Model

__all__ = ["evaluate", "predict", "evaluate_layer", "im2col", "tree_leaf_values"]

_erf = np.vectorize(math.erf, otypes=[np.float64])


def im2col(x: np.ndarray, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int]):
    """Patches of ``x`` (N, C, H, W) as ``(N, OH·OW, C·kh·kw)`` plus ``(OH, OW)``.

    Works for any dtype (the MPC backend uses it on uint64 shares: padding is zeros).
    """
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
    return cols.reshape(n, c * kh * kw, oh * ow).transpose(0, 2, 1), (oh, ow)


def pool_windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """Windows of ``x`` (N, C, H, W) as ``(kh·kw, N, C, OH, OW)`` (any dtype)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    return np.stack(
        [x[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] for i in range(kh) for j in range(kw)]
    )


def tree_leaf_values(ens: TreeEnsemble, x: np.ndarray) -> np.ndarray:
    """Mean over trees of the leaf value each row of ``x`` (N, F) reaches: (N, n_outputs)."""
    out = np.zeros((x.shape[0], ens.n_outputs))
    x = x.astype(np.float32).astype(np.float64)  # sklearn compares float32 inputs
    for feat, thr, left, right, val in zip(
        ens.features, ens.thresholds, ens.lefts, ens.rights, ens.values
    ):
        node = np.zeros(x.shape[0], dtype=np.int64)
        for _ in range(len(feat)):
            inner = left[node] != -1
            if not inner.any():
                break
            go_left = x[np.arange(len(x)), np.maximum(feat[node], 0)] <= thr[node]
            nxt = np.where(go_left, left[node], right[node])
            node = np.where(inner, nxt, node)
        out += val[node]
    return out / ens.n_trees


def evaluate_layer(layer: Layer, x: np.ndarray) -> np.ndarray:
    """One layer on a float64 batch."""
    if isinstance(layer, Linear):
        return x @ layer.weight.T + layer.bias
    if isinstance(layer, Conv2d):
        o, c, kh, kw = layer.weight.shape
        cols, (oh, ow) = im2col(x, kh, kw, layer.stride, layer.padding)
        y = cols @ layer.weight.reshape(o, -1).T + layer.bias
        return y.transpose(0, 2, 1).reshape(x.shape[0], o, oh, ow)
    if isinstance(layer, ReLU):
        return np.maximum(x, 0.0)
    if isinstance(layer, GELU):
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if isinstance(layer, Sigmoid):
        return 1.0 / (1.0 + np.exp(-x))
    if isinstance(layer, Tanh):
        return np.tanh(x)
    if isinstance(layer, Softmax):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if isinstance(layer, Argmax):
        return np.argmax(x, axis=-1).astype(np.float64)[:, None]
    if isinstance(layer, AvgPool2d):
        return pool_windows(x, layer.kernel, layer.stride).mean(axis=0)
    if isinstance(layer, MaxPool2d):
        return pool_windows(x, layer.kernel, layer.stride).max(axis=0)
    if isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1)
    if isinstance(layer, TreeEnsemble):
        return tree_leaf_values(layer, x)
    raise ConfigError(f"no reference evaluation for layer {type(layer).__name__}")


def evaluate(model: Model, x: np.ndarray) -> np.ndarray:
    """The model's output on a batch ``x`` of shape ``(N, *input_shape)`` (float64).

    Raises:
        ConfigError: ``x`` does not have the model's input shape.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[1:] != model.input_shape:
        raise ConfigError(f"input batch has shape {x.shape}; expected (N, *{model.input_shape})")
    for layer in model.layers:
        x = evaluate_layer(layer, x)
    return x


def predict(model: Model, x: np.ndarray) -> np.ndarray:
    """Labels: argmax of the output for classification (class values of a forest), else the
    output (a regression with one output gives shape (N,))."""
    y = evaluate(model, x)
    if model.task == "classification":
        if isinstance(model.layers[-1], Argmax):
            return y[:, 0].astype(np.int64)
        idx = np.argmax(y, axis=-1)
        last = model.layers[-1]
        if isinstance(last, TreeEnsemble) and last.classes:
            return np.asarray(last.classes)[idx]
        return idx
    return y[:, 0] if y.shape[1:] == (1,) else y
