"""The model: an input shape, a sequence of IR layers and what the output means."""

from __future__ import annotations

from dataclasses import dataclass

from veil.errors import ConfigError
from veil.models.ir.layers import (
    Argmax,
    AvgPool2d,
    Conv2d,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    Softmax,
    TreeEnsemble,
)

__all__ = ["Model", "output_shape"]

_TASKS = ("regression", "classification")


@dataclass(frozen=True, eq=False)
class Model:
    """A model in veil's IR: layers applied in order to a batch of inputs.

    Attributes:
        input_shape: shape of ONE sample, e.g. ``(64,)`` or ``(1, 8, 8)``.
        layers: the layers, in evaluation order.
        task: ``"regression"`` (outputs are values) or ``"classification"`` (outputs are
            scores or probabilities per class; ``predict`` takes their argmax).
        name: a label for reports.

    Raises:
        ConfigError: unknown task, no layers, or layers whose shapes do not fit.
    """

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    task: str = "regression"
    name: str = "model"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.task not in _TASKS:
            raise ConfigError(f"Model.task must be one of {_TASKS}, got {self.task!r}")
        if not self.layers:
            raise ConfigError("a Model needs at least one layer")
        output_shape(self)  # validates the shapes

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the output for one sample."""
        return output_shape(self)

    def n_parameters(self) -> int:
        """Weights + biases of the linear layers (trees: node and leaf entries)."""
        n = 0
        for layer in self.layers:
            if isinstance(layer, Linear | Conv2d):
                n += layer.weight.size + layer.bias.size
            elif isinstance(layer, TreeEnsemble):
                n += sum(t.size for t in layer.thresholds) + sum(v.size for v in layer.values)
        return n

    def __repr__(self) -> str:
        kinds = ", ".join(type(layer).__name__ for layer in self.layers)
        return f"Model({self.name!r}, input={self.input_shape}, task={self.task}, [{kinds}])"


def _pool_out(shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int], what: str):
    if len(shape) != 3:
        raise ConfigError(f"{what} needs (C, H, W) input, got {shape}")
    c, h, w = shape
    oh, ow = (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ConfigError(f"{what} kernel {kernel} larger than input {shape}")
    return (c, oh, ow)


def output_shape(model: Model) -> tuple[int, ...]:
    """Per-sample output shape, checking that each layer fits its input.

    Raises:
        ConfigError: a layer's expected input does not match.
    """
    shape = model.input_shape
    for i, layer in enumerate(model.layers):
        what = f"layer {i} ({type(layer).__name__})"
        if isinstance(layer, Linear):
            if shape != (layer.in_features,):
                raise ConfigError(f"{what} expects ({layer.in_features},) input, got {shape}")
            shape = (layer.out_features,)
        elif isinstance(layer, Conv2d):
            o, c, kh, kw = layer.weight.shape
            if len(shape) != 3 or shape[0] != c:
                raise ConfigError(f"{what} expects ({c}, H, W) input, got {shape}")
            (sh, sw), (ph, pw) = layer.stride, layer.padding
            oh, ow = (shape[1] + 2 * ph - kh) // sh + 1, (shape[2] + 2 * pw - kw) // sw + 1
            if oh < 1 or ow < 1:
                raise ConfigError(f"{what} kernel larger than its padded input {shape}")
            shape = (o, oh, ow)
        elif isinstance(layer, AvgPool2d | MaxPool2d):
            shape = _pool_out(shape, layer.kernel, layer.stride, what)
        elif isinstance(layer, Flatten):
            n = 1
            for s in shape:
                n *= s
            shape = (n,)
        elif isinstance(layer, TreeEnsemble):
            if shape != (layer.n_features,):
                raise ConfigError(f"{what} expects ({layer.n_features},) input, got {shape}")
            shape = (layer.n_outputs,)
        elif isinstance(layer, Argmax):
            if len(shape) != 1:
                raise ConfigError(f"{what} needs a vector per sample, got {shape}")
            shape = (1,)
        elif isinstance(layer, Softmax) and len(shape) != 1:
            raise ConfigError(f"{what} needs a vector per sample, got {shape}")
    return shape
