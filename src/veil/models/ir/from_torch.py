"""Torch → IR: an ``nn.Sequential`` or any module torch.fx can trace into a chain.

BatchNorm (eval statistics) is folded into the preceding Linear/Conv2d; Dropout and
Identity are dropped. Anything else raises :class:`UnsupportedModelError` naming the node.
The user's module is read, never modified.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
    UnsupportedModelError,
)
from veil.models.ir.model import Model

__all__ = ["from_torch"]


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _fold_bn(prev: Layer | None, bn: Any, name: str) -> Layer:
    if not isinstance(prev, Linear | Conv2d):
        raise UnsupportedModelError(
            f"BatchNorm {name!r} must directly follow a Linear or Conv2d layer to be folded"
        )
    if bn.running_mean is None:
        raise UnsupportedModelError(f"BatchNorm {name!r} without running statistics")
    scale = _np(bn.weight) if bn.weight is not None else np.ones(bn.num_features)
    shift = _np(bn.bias) if bn.bias is not None else np.zeros(bn.num_features)
    g = scale / np.sqrt(_np(bn.running_var) + bn.eps)
    w = prev.weight * g.reshape((-1,) + (1,) * (prev.weight.ndim - 1))
    b = (prev.bias - _np(bn.running_mean)) * g + shift
    if isinstance(prev, Linear):
        return Linear(w, b)
    return Conv2d(w, b, prev.stride, prev.padding)


def _module_layer(mod: Any, name: str) -> Layer | str | None:
    """IR layer for a leaf module; ``"bn"`` for batch norm; None for no-ops."""
    from torch import nn

    if isinstance(mod, nn.Linear):
        b = _np(mod.bias) if mod.bias is not None else np.zeros(mod.out_features)
        return Linear(_np(mod.weight), b)
    if isinstance(mod, nn.Conv2d):
        if mod.groups != 1 or _pair(mod.dilation) != (1, 1) or isinstance(mod.padding, str):
            raise UnsupportedModelError(
                f"Conv2d {name!r}: groups, dilation and string padding are not supported"
            )
        if mod.padding_mode != "zeros":
            raise UnsupportedModelError(f"Conv2d {name!r}: padding_mode {mod.padding_mode!r}")
        b = _np(mod.bias) if mod.bias is not None else np.zeros(mod.out_channels)
        return Conv2d(_np(mod.weight), b, _pair(mod.stride), _pair(mod.padding))
    if isinstance(mod, nn.ReLU):
        return ReLU()
    if isinstance(mod, nn.GELU):
        return GELU()
    if isinstance(mod, nn.Sigmoid):
        return Sigmoid()
    if isinstance(mod, nn.Tanh):
        return Tanh()
    if isinstance(mod, nn.Softmax):
        if mod.dim not in (None, -1, 1):
            raise UnsupportedModelError(f"Softmax {name!r} over dim {mod.dim} (only the last)")
        return Softmax()
    if isinstance(mod, nn.Flatten):
        if mod.start_dim != 1 or mod.end_dim != -1:
            raise UnsupportedModelError(f"Flatten {name!r} must flatten dims 1..-1")
        return Flatten()
    if isinstance(mod, nn.AvgPool2d | nn.MaxPool2d):
        if _pair(mod.padding) != (0, 0) or mod.ceil_mode:
            raise UnsupportedModelError(f"{type(mod).__name__} {name!r}: padding/ceil_mode")
        if isinstance(mod, nn.AvgPool2d) and mod.divisor_override is not None:
            raise UnsupportedModelError(f"AvgPool2d {name!r}: divisor_override")
        if isinstance(mod, nn.MaxPool2d) and _pair(mod.dilation) != (1, 1):
            raise UnsupportedModelError(f"MaxPool2d {name!r}: dilation")
        k = _pair(mod.kernel_size)
        s = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
        return (AvgPool2d if isinstance(mod, nn.AvgPool2d) else MaxPool2d)(k, s)
    if isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d):
        return "bn"
    if isinstance(mod, nn.Dropout | nn.Identity):
        return None
    raise UnsupportedModelError(f"unsupported layer {type(mod).__name__} ({name!r})")


def _function_layer(node: Any) -> Layer | None:
    import torch
    import torch.nn.functional as F

    target, args, kwargs = node.target, node.args, node.kwargs
    name = getattr(target, "__name__", str(target))
    if target in (torch.relu, F.relu) or target == "relu":
        return ReLU()
    if target in (torch.sigmoid, F.sigmoid) or target == "sigmoid":
        return Sigmoid()
    if target in (torch.tanh, F.tanh) or target == "tanh":
        return Tanh()
    if target is F.gelu:
        return GELU()
    if target in (torch.flatten, "flatten"):
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        if start != 1 or (len(args) > 2 and args[2] != -1):
            raise UnsupportedModelError(f"flatten from dim {start} in node {node.name!r}")
        return Flatten()
    if target in ("view", "reshape"):
        shape = args[1:] if len(args) > 2 else (args[1],)
        if len(shape) == 2 and shape[1] == -1:
            return Flatten()
        raise UnsupportedModelError(f"{target}{tuple(shape)} in node {node.name!r}")
    if target in (F.softmax, torch.softmax, "softmax"):
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if dim not in (-1, 1):
            raise UnsupportedModelError(f"softmax over dim {dim} in node {node.name!r}")
        return Softmax()
    if target in (torch.argmax, "argmax"):
        return Argmax()
    if target in ("contiguous", "float"):
        return None
    raise UnsupportedModelError(f"unsupported operation {name} (node {node.name!r})")


def from_torch(
    module: Any, input_shape: tuple[int, ...], *, task: str = "classification", name: str = ""
) -> Model:
    """Describe a torch module as an IR :class:`Model`.

    Args:
        module: an ``nn.Module`` whose forward is a chain of supported layers
            (Linear, Conv2d, ReLU, GELU, Sigmoid, Tanh, Softmax, argmax, AvgPool2d,
            MaxPool2d, Flatten/flatten(1)/view(n, -1), BatchNorm after Linear/Conv2d,
            Dropout, Identity), as modules or as functional calls.
        input_shape: shape of one sample (without the batch axis).
        task: ``"classification"`` or ``"regression"``.
        name: label for reports (default: the module's class name).

    Raises:
        UnsupportedModelError: a layer, function or graph shape (branches, residuals)
            that the IR cannot describe; the message names it.
    """
    import torch.fx

    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:  # fx raises many kinds of errors on untraceable code
        raise UnsupportedModelError(
            f"{type(module).__name__} cannot be traced by torch.fx ({type(e).__name__}); "
            "write it as nn.Sequential or a chain of supported layers"
        ) from None
    modules = dict(gm.named_modules())
    layers: list[Layer] = []
    prev = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if prev is not None:
                raise UnsupportedModelError("models with more than one input are not supported")
            prev = node
            continue
        if node.op == "output":
            if node.args[0] is not prev:
                raise UnsupportedModelError("the output must be the last layer's result")
            break
        if node.op == "get_attr":
            raise UnsupportedModelError(f"parameter used directly in forward (node {node.name!r})")
        tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if tensor_args != [prev] or len(prev.users) != 1:
            raise UnsupportedModelError(
                f"node {node.name!r} ({node.target}) is not a plain chain step "
                "(branches and residual connections are not supported)"
            )
        if node.op == "call_module":
            layer = _module_layer(modules[node.target], node.target)
            if layer == "bn":
                layers[-1:] = [_fold_bn(layers[-1] if layers else None, modules[node.target],
                                        node.target)]
                layer = None
        else:
            layer = _function_layer(node)
        if layer is not None:
            layers.append(layer)  # type: ignore[arg-type]
        prev = node
    return Model(tuple(input_shape), tuple(layers), task=task, name=name or type(module).__name__)
