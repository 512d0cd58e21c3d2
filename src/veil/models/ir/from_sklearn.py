"""scikit-learn → IR for linear models, MLPs, decision trees and random forests."""

from __future__ import annotations

from typing import Any

import numpy as np

from veil.errors import ConfigError
from veil.models.ir.layers import Layer, Linear, ReLU, Sigmoid, Tanh, TreeEnsemble, UnsupportedModelError
from veil.models.ir.model import Model

__all__ = ["from_sklearn"]

_LINEAR_REG = ("LinearRegression", "Ridge", "Lasso", "ElasticNet", "RidgeCV", "LassoCV")
_TREES = (
    "DecisionTreeRegressor",
    "DecisionTreeClassifier",
    "RandomForestRegressor",
    "RandomForestClassifier",
    "ExtraTreesRegressor",
    "ExtraTreesClassifier",
    "ExtraTreeRegressor",
    "ExtraTreeClassifier",
)


def _two_class(w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A binary decision function ``z`` as two scores ``(0, z)``: argmax = sklearn's label."""
    return np.vstack([np.zeros_like(w), w]), np.concatenate([[0.0], b])


def _trees(est: Any) -> TreeEnsemble:
    trees = getattr(est, "estimators_", None) or [est]
    clf = hasattr(est, "classes_")
    if clf and np.ndim(est.classes_) != 1:
        raise UnsupportedModelError(f"multi-output {type(est).__name__} is not supported")
    feats, thrs, lefts, rights, vals = [], [], [], [], []
    for t in trees:
        tr = t.tree_
        v = np.asarray(tr.value, dtype=np.float64)
        if clf:
            v = v[:, 0, :]
            v = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-300)
        else:
            v = v[:, :, 0]
        feats.append(tr.feature)
        thrs.append(tr.threshold)
        lefts.append(tr.children_left)
        rights.append(tr.children_right)
        vals.append(v)
    return TreeEnsemble(
        tuple(feats), tuple(thrs), tuple(lefts), tuple(rights), tuple(vals),
        n_features=int(est.n_features_in_),
        kind="classifier" if clf else "regressor",
        classes=tuple(float(c) for c in est.classes_) if clf else (),
    )


def from_sklearn(est: Any, *, name: str = "") -> Model:
    """Describe a fitted scikit-learn estimator as an IR :class:`Model`.

    Supported: LinearRegression, Ridge, Lasso, ElasticNet, LogisticRegression,
    MLPRegressor, MLPClassifier, DecisionTree{Regressor,Classifier},
    RandomForest{Regressor,Classifier}, ExtraTrees{Regressor,Classifier}.
    Classifiers output one score per class (logits, or leaf class frequencies for trees):
    their argmax is sklearn's ``predict``. Binary linear/MLP classifiers output
    ``(0, z)`` with ``z`` the decision function.

    Raises:
        UnsupportedModelError: another estimator type, or an unsupported option
            (the message names it).
        ConfigError: the estimator is not fitted.
    """
    kind = type(est).__name__
    label = name or kind
    if not hasattr(est, "n_features_in_"):
        raise ConfigError(f"{kind} is not fitted; call fit() first")
    f = int(est.n_features_in_)
    if kind in _LINEAR_REG:
        w = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))
        b = np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64)) * np.ones(w.shape[0])
        return Model((f,), (Linear(w, b),), task="regression", name=label)
    if kind == "LogisticRegression":
        w, b = np.asarray(est.coef_, dtype=np.float64), np.asarray(est.intercept_, dtype=np.float64)
        if w.shape[0] == 1:
            w, b = _two_class(w, b)
        return Model((f,), (Linear(w, b),), task="classification", name=label)
    if kind in ("MLPRegressor", "MLPClassifier"):
        acts: dict[str, type[Layer] | None] = {
            "relu": ReLU, "tanh": Tanh, "logistic": Sigmoid, "identity": None,
        }
        if est.activation not in acts:
            raise UnsupportedModelError(f"{kind} activation {est.activation!r}")
        layers: list[Layer] = []
        n = len(est.coefs_)
        for i, (w, b) in enumerate(zip(est.coefs_, est.intercepts_)):
            wt, bb = np.asarray(w, dtype=np.float64).T, np.asarray(b, dtype=np.float64)
            if i == n - 1 and kind == "MLPClassifier" and wt.shape[0] == 1:
                wt, bb = _two_class(wt, bb)
            layers.append(Linear(wt, bb))
            act = acts[est.activation]
            if i < n - 1 and act is not None:
                layers.append(act())
        task = "classification" if kind == "MLPClassifier" else "regression"
        return Model((f,), tuple(layers), task=task, name=label)
    if kind in _TREES:
        ens = _trees(est)
        task = "classification" if ens.kind == "classifier" else "regression"
        return Model((f,), (ens,), task=task, name=label)
    raise UnsupportedModelError(f"unsupported estimator {kind}")
