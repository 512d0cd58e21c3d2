"""Evaluation metrics beyond accuracy, overall and per site, each labelled for what it is.

Classification: accuracy, balanced accuracy, F1 (positive class for two classes, macro
over classes otherwise), ROC AUC (binary, or one-vs-rest macro over the classes that occur
in the test data) and cross-entropy. Regression: R² (coefficient of determination, *not*
an accuracy), MAE, RMSE and MSE. A metric that is undefined on the data (AUC with one
class present, R² of a constant target) is ``None`` with a note saying why — never NaN.

Example:
    >>> from veil.models.metrics import evaluate_sites
    >>> per_site = evaluate_sites(model, {"a": (xa, ya), "b": (xb, yb)},
    ...                           "classification", 2)          # doctest: +SKIP
    >>> per_site["a"].values["auc"], per_site["a"].label("auc")  # doctest: +SKIP
    (0.91, 'ROC AUC')
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from veil.errors import ConfigError, DataError

__all__ = [
    "Metrics",
    "METRIC_LABELS",
    "PRIMARY_METRIC",
    "classification_metrics",
    "regression_metrics",
    "evaluate_model",
    "evaluate_sites",
    "summarise_sites",
    "metrics_table",
    "TASK_METRICS",
]

#: Plain labels for reports and the CLI.
METRIC_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "f1": "F1",
    "auc": "ROC AUC",
    "cross_entropy": "cross-entropy",
    "r2": "R² (coefficient of determination)",
    "mae": "MAE (mean absolute error)",
    "rmse": "RMSE",
    "mse": "MSE",
}

#: The metrics each task reports, in display order.
TASK_METRICS = {
    "classification": ("accuracy", "balanced_accuracy", "f1", "auc", "cross_entropy"),
    "regression": ("r2", "mae", "rmse", "mse"),
}

#: The headline metric of each task (what a one-number summary shows, with its label).
PRIMARY_METRIC = {"classification": "accuracy", "regression": "r2"}


@dataclass(frozen=True)
class Metrics:
    """Metrics of one model on one set of examples.

    Attributes:
        task: ``"classification"`` or ``"regression"``.
        n: number of examples.
        values: metric name → value, or ``None`` where undefined on this data.
        notes: metric name → why it is undefined or how it was averaged.
    """

    task: str
    n: int
    values: dict[str, float | None]
    notes: dict[str, str] = field(default_factory=dict)

    def label(self, name: str) -> str:
        """The plain label of a metric (``"R² (coefficient of determination)"``)."""
        if name == "f1":
            return "F1 (" + self.notes.get("f1", "macro") + ")"
        return METRIC_LABELS.get(name, name)

    @property
    def primary(self) -> tuple[str, float | None]:
        """``(name, value)`` of the task's headline metric."""
        name = PRIMARY_METRIC[self.task]
        return name, self.values.get(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (undefined values are ``null``)."""
        return {"task": self.task, "n": self.n, **self.values,
                **({"notes": dict(self.notes)} if self.notes else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Metrics:
        """The inverse of :meth:`to_dict` (e.g. from a run record).

        Raises:
            DataError: ``task`` or ``n`` missing or of the wrong type.
        """
        task, n = d.get("task"), d.get("n")
        if task not in PRIMARY_METRIC or not isinstance(n, int):
            raise DataError(f"not a metrics record (needs task and n): {dict(d)!r}"[:300])
        vals = {k: (float(v) if isinstance(v, (int, float)) else None)
                for k, v in d.items() if k not in ("task", "n", "notes")}
        return cls(str(task), n, vals, dict(d.get("notes") or {}))


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(y_true: np.ndarray, logits: np.ndarray, n_classes: int) -> Metrics:
    """Metrics from class scores.

    Args:
        y_true: int class ids, shape ``(n,)``.
        logits: raw scores (logits), shape ``(n, n_classes)``.
        n_classes: number of classes.

    Raises:
        DataError: shapes disagree, labels out of range, or no examples.
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    s = np.asarray(logits, dtype=np.float64)
    if len(y) == 0:
        raise DataError("cannot evaluate on zero examples")
    if s.ndim != 2 or s.shape != (len(y), n_classes):
        raise DataError(f"scores have shape {s.shape}, expected ({len(y)}, {n_classes})")
    if y.min() < 0 or y.max() >= n_classes:
        raise DataError(f"labels must be class ids in [0, {n_classes}), got {y.min()}..{y.max()}")
    if not np.isfinite(s).all():
        raise DataError("the model's outputs contain NaN or inf")
    prob = _softmax(s)
    pred = s.argmax(axis=1)
    notes: dict[str, str] = {}
    vals: dict[str, float | None] = {"accuracy": float((pred == y).mean())}
    present = np.unique(y)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected
        warnings.simplefilter("ignore", UserWarning)
        vals["balanced_accuracy"] = float(balanced_accuracy_score(y, pred))
    if len(present) < n_classes:
        notes["balanced_accuracy"] = f"over the {len(present)} classes present"
    if n_classes == 2:
        vals["f1"] = float(f1_score(y, pred, pos_label=1, average="binary", zero_division=0))
        notes["f1"] = "positive class"
    else:
        vals["f1"] = float(f1_score(y, pred, labels=present, average="macro", zero_division=0))
        notes["f1"] = "macro over classes present"
    if len(present) < 2:
        vals["auc"] = None
        notes["auc"] = "undefined: only one class in these examples"
    elif n_classes == 2:
        vals["auc"] = float(roc_auc_score(y, prob[:, 1]))
    else:
        aucs = [roc_auc_score(y == c, prob[:, c]) for c in present]
        vals["auc"] = float(np.mean(aucs))
        notes["auc"] = f"one-vs-rest macro over {len(present)} classes present"
    p_true = np.clip(prob[np.arange(len(y)), y], 1e-12, 1.0)
    vals["cross_entropy"] = _finite(float(-np.log(p_true).mean()))
    return Metrics("classification", len(y), vals, notes)


def regression_metrics(y_true: np.ndarray, pred: np.ndarray) -> Metrics:
    """R², MAE, RMSE and MSE of predictions.

    Raises:
        DataError: shapes disagree, non-finite values, or no examples.
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    if len(y) == 0:
        raise DataError("cannot evaluate on zero examples")
    if p.shape != y.shape:
        raise DataError(f"{p.size} predictions for {y.size} targets")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise DataError("targets or predictions contain NaN or inf")
    err = p - y
    mse = float(np.mean(err**2))
    notes: dict[str, str] = {}
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if len(y) < 2 or ss_tot == 0.0:
        r2 = None
        notes["r2"] = "undefined: the targets are constant (or a single example)"
    else:
        r2 = 1.0 - float(np.sum(err**2)) / ss_tot
    vals: dict[str, float | None] = {"r2": r2, "mae": float(np.mean(np.abs(err))),
                                     "rmse": math.sqrt(mse), "mse": mse}
    return Metrics("regression", len(y), vals, notes)


def evaluate_model(
    model: Any, x: np.ndarray, y: np.ndarray, task: str, n_classes: int,
    batch_size: int = 2048,
) -> Metrics:
    """Run a torch model on ``x`` (eval mode, no gradients) and score it against ``y``.

    The model's train/eval mode is restored afterwards.

    Raises:
        ConfigError: unknown task.
        DataError: see :func:`classification_metrics` / :func:`regression_metrics`.
    """
    import torch

    if task not in PRIMARY_METRIC:
        raise ConfigError(f"task must be 'classification' or 'regression', got {task!r}")
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                xb = torch.as_tensor(np.asarray(x[i : i + batch_size]), dtype=torch.float32)
                outs.append(model(xb).detach().cpu().numpy())
    finally:
        model.train(was_training)
    out = np.concatenate(outs, axis=0) if outs else np.zeros((0, max(n_classes, 1)))
    if task == "classification":
        return classification_metrics(y, out, n_classes)
    return regression_metrics(y, out)


def evaluate_sites(
    model: Any,
    sites: Mapping[str, tuple[np.ndarray, np.ndarray]] | Any,
    task: str | None = None,
    n_classes: int | None = None,
) -> dict[str, Metrics]:
    """Each site's metrics on its own test data.

    Args:
        model: the torch model (weights already loaded).
        sites: site name → ``(x_test, y_test)``, or a :class:`veil.data.FederatedData`.
        task, n_classes: required with a mapping; taken from ``FederatedData`` otherwise.

    Raises:
        ConfigError: task / n_classes missing for a mapping.
        DataError: a site's test data is empty or malformed (the message names the site).
    """
    if not isinstance(sites, Mapping):
        task = task or sites.task
        n_classes = n_classes or sites.n_classes
        sites = {s.name: (s.x_test, s.y_test) for s in sites.sites}
    if task is None or n_classes is None:
        raise ConfigError("evaluate_sites needs task and n_classes with a mapping of sites")
    out: dict[str, Metrics] = {}
    for name, (x, y) in sites.items():
        try:
            out[name] = evaluate_model(model, x, y, task, n_classes)
        except DataError as e:
            raise DataError(f"site {name!r}: {e}") from None
    return out


def summarise_sites(per_site: Mapping[str, Metrics]) -> dict[str, Any]:
    """Mean, worst and best site of each metric (undefined values left out), for records.

    Returns:
        ``{"metric": {"mean": .., "min": .., "max": .., "worst_site": .., "n_sites": ..}}``.
    """
    out: dict[str, Any] = {}
    if not per_site:
        return out
    first = next(iter(per_site.values()))
    lower_is_better = {"cross_entropy", "mae", "rmse", "mse"}
    for name in first.values:
        pairs = [(s, m.values.get(name)) for s, m in per_site.items()]
        vals = [(s, v) for s, v in pairs if v is not None]
        if not vals:
            continue
        nums = np.asarray([v for _, v in vals], dtype=np.float64)
        worst = (max if name in lower_is_better else min)(vals, key=lambda sv: sv[1])[0]
        out[name] = {"mean": float(nums.mean()), "min": float(nums.min()),
                     "max": float(nums.max()), "worst_site": worst, "n_sites": len(vals)}
    return out


def metrics_table(per_site: Mapping[str, Metrics]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (plain strings) of a per-site metrics table, for the CLI and reports.

    Columns: site, n, then the task's metrics with their labels; an undefined value shows
    as ``"–"``.
    """
    if not per_site:
        return ["site"], []
    task = next(iter(per_site.values())).task
    names = TASK_METRICS[task]
    header = ["site", "n"] + [METRIC_LABELS[n].split(" (")[0] for n in names]
    rows = []
    for site, m in per_site.items():
        cells = [site, str(m.n)]
        for n in names:
            v = m.values.get(n)
            cells.append("–" if v is None else f"{v:.3f}")
        rows.append(cells)
    return header, rows

