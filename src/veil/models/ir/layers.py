"""The layers of veil's model description (IR): frozen values holding numpy float64 arrays.

Every layer works on a batch: the leading axis of every activation is the batch axis.
Image activations are ``(batch, channels, height, width)`` (torch's NCHW).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from veil.errors import ConfigError

__all__ = [
    "Linear",
    "Conv2d",
    "ReLU",
    "GELU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Argmax",
    "AvgPool2d",
    "MaxPool2d",
    "Flatten",
    "TreeEnsemble",
    "Layer",
    "ACTIVATION_KINDS",
    "PLAIN_KINDS",
    "UnsupportedModelError",
]


class UnsupportedModelError(ConfigError):
    """A model, layer or option that the IR cannot describe (the message names it)."""


def _frozen_array(a: object, name: str) -> np.ndarray:
    arr = np.array(a, dtype=np.float64)  # always a private copy
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} holds NaN or infinite values")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Linear:
    """``y = x @ weight.T + bias``; ``weight`` is ``(out, in)`` like torch."""

    weight: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        w = _frozen_array(self.weight, "Linear.weight")
        b = _frozen_array(self.bias, "Linear.bias")
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ConfigError(f"Linear needs weight (out, in) and bias (out,), got {w.shape}, {b.shape}")
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", b)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True, eq=False)
class Conv2d:
    """2-D convolution (cross-correlation, like torch); ``weight`` is ``(out, in, kh, kw)``.

    ``padding`` is zero padding on each side; groups and dilation other than 1 are not
    supported.
    """

    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        w = _frozen_array(self.weight, "Conv2d.weight")
        b = _frozen_array(self.bias, "Conv2d.bias")
        if w.ndim != 4 or b.shape != (w.shape[0],):
            raise ConfigError(f"Conv2d needs weight (O, C, kh, kw) and bias (O,), got {w.shape}")
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "stride", tuple(int(s) for s in self.stride))
        object.__setattr__(self, "padding", tuple(int(p) for p in self.padding))


@dataclass(frozen=True)
class ReLU:
    """max(x, 0) elementwise."""


@dataclass(frozen=True)
class GELU:
    """x·Φ(x) elementwise (the exact erf form; torch's tanh form differs by < 1e-3)."""


@dataclass(frozen=True)
class Sigmoid:
    """1 / (1 + exp(−x)) elementwise."""


@dataclass(frozen=True)
class Tanh:
    """tanh(x) elementwise."""


@dataclass(frozen=True)
class Softmax:
    """Softmax over the last axis."""


@dataclass(frozen=True)
class Argmax:
    """Index of the largest entry of the last axis (ties: the first), as float class ids."""


@dataclass(frozen=True)
class AvgPool2d:
    """Average pooling over ``kernel`` windows moved by ``stride`` (no padding)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]


@dataclass(frozen=True)
class MaxPool2d:
    """Max pooling over ``kernel`` windows moved by ``stride`` (no padding)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]


@dataclass(frozen=True)
class Flatten:
    """``(batch, ...) -> (batch, prod(...))`` in C order (torch's flatten(1))."""


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """Decision trees combined by averaging (a single tree is an ensemble of one).

    Trees use scikit-learn's node arrays: node ``j`` is a leaf when ``left[j] == -1``;
    otherwise the sample goes left when ``x[feature[j]] <= threshold[j]`` (the reference
    rounds ``x`` to float32 first, as scikit-learn does). ``values[t]`` is
    ``(n_nodes_t, n_outputs)``: the regression value, or the class probabilities of the leaf.
    The prediction is the mean over trees of the leaf values reached (sklearn's
    ``predict`` for regressors and ``predict_proba`` for classifiers).

    Attributes:
        n_features: input width.
        kind: ``"regressor"`` or ``"classifier"``.
    """

    features: tuple[np.ndarray, ...]
    thresholds: tuple[np.ndarray, ...]
    lefts: tuple[np.ndarray, ...]
    rights: tuple[np.ndarray, ...]
    values: tuple[np.ndarray, ...]
    n_features: int
    kind: str = "regressor"
    classes: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in ("regressor", "classifier"):
            raise ConfigError(f"TreeEnsemble.kind must be regressor or classifier, got {self.kind!r}")
        n = len(self.features)
        if n == 0 or not (
            len(self.thresholds) == len(self.lefts) == len(self.rights) == len(self.values) == n
        ):
            raise ConfigError("TreeEnsemble needs the same positive number of trees in every array")
        for name in ("features", "lefts", "rights"):
            object.__setattr__(
                self, name, tuple(np.array(a, dtype=np.int64) for a in getattr(self, name))
            )
        object.__setattr__(
            self, "thresholds", tuple(_frozen_array(a, "threshold") for a in self.thresholds)
        )
        vals = tuple(_frozen_array(np.reshape(v, (len(v), -1)), "leaf value") for v in self.values)
        object.__setattr__(self, "values", vals)

    @property
    def n_trees(self) -> int:
        return len(self.features)

    @property
    def n_outputs(self) -> int:
        return int(self.values[0].shape[1])

    def depth(self) -> int:
        """The largest root-to-leaf depth over all trees (a lone leaf has depth 0)."""
        best = 0
        for left, right in zip(self.lefts, self.rights):
            stack = [(0, 0)]
            while stack:
                node, d = stack.pop()
                if left[node] == -1:
                    best = max(best, d)
                else:
                    stack += [(int(left[node]), d + 1), (int(right[node]), d + 1)]
        return best


Layer = (
    Linear | Conv2d | ReLU | GELU | Sigmoid | Tanh | Softmax | Argmax | AvgPool2d | MaxPool2d
    | Flatten | TreeEnsemble
)

#: the element-wise activations by name (one spelling for the file format and the backends' plans)
ACTIVATION_KINDS: dict[str, type] = {"relu": ReLU, "gelu": GELU, "sigmoid": Sigmoid, "tanh": Tanh}
#: every parameter-free layer by name
PLAIN_KINDS: dict[str, type] = {
    **ACTIVATION_KINDS, "softmax": Softmax, "argmax": Argmax, "flatten": Flatten
}
