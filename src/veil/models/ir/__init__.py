"""veil's model description (IR), shared by the private-inference backends (mpc, fhe).

A :class:`Model` is ``input_shape`` (one sample, no batch axis) + a tuple of layers applied
in order to a batch + ``task`` (``"regression"`` or ``"classification"``). Layers are frozen
values with float64 numpy arrays (read-only):

* :class:`Linear` ``(weight (out, in), bias (out,))``: ``x @ W.T + b``.
* :class:`Conv2d` ``(weight (O, C, kh, kw), bias, stride, padding)`` on NCHW batches.
* :class:`ReLU`, :class:`GELU` (erf form), :class:`Sigmoid`, :class:`Tanh`,
  :class:`Softmax` (last axis), :class:`Argmax` (last axis → one float class id).
* :class:`AvgPool2d` / :class:`MaxPool2d` ``(kernel, stride)``, no padding.
* :class:`Flatten`: ``(N, ...) → (N, -1)`` in C order.
* :class:`TreeEnsemble`: sklearn node arrays per tree (``features``, ``thresholds``,
  ``lefts``, ``rights``, ``values``); go left when ``x[f] <= t``; output the mean of the
  leaf values (regression values or class frequencies); ``classes`` for classifiers.

Build one with :func:`from_torch` (``nn.Sequential`` or any torch.fx-traceable chain;
BatchNorm folded into the preceding Linear/Conv2d; Dropout/Identity dropped) or
:func:`from_sklearn` (LinearRegression, Ridge, Lasso, ElasticNet, LogisticRegression,
MLPRegressor/Classifier, DecisionTree*/RandomForest*/ExtraTrees*). Anything else raises
:class:`UnsupportedModelError` (a ``ConfigError``) naming the layer or estimator.
:func:`evaluate` is the plaintext numpy reference (float64) that backends are tested
against; :func:`predict` turns outputs into labels (argmax for classification) — a
backend's output goes through the same :func:`predict`. :func:`save` / :func:`load` keep a
model in one ``.npz`` (arrays + JSON, no pickles) — the MODEL file of ``veil infer``.

Example::

    from veil.models.ir import from_sklearn, evaluate
    model = from_sklearn(fitted_mlp)
    for layer in model.layers: ...       # dispatch with isinstance(layer, Linear) etc.
    y = evaluate(model, x)               # (N, *model.output_shape)
"""

from veil.models.ir.from_sklearn import from_sklearn
from veil.models.ir.from_torch import from_torch
from veil.models.ir.io import load, save
from veil.models.ir.layers import (
    ACTIVATION_KINDS,
    GELU,
    PLAIN_KINDS,
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
    UnsupportedModelError,
)
from veil.models.ir.model import Model, output_shape
from veil.models.ir.reference import evaluate, evaluate_layer, im2col, pool_windows, predict

__all__ = [
    "Model",
    "Layer",
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
    "ACTIVATION_KINDS",
    "PLAIN_KINDS",
    "UnsupportedModelError",
    "from_torch",
    "from_sklearn",
    "evaluate",
    "evaluate_layer",
    "predict",
    "output_shape",
    "im2col",
    "pool_windows",
    "save",
    "load",
]
