"""AUC, F1, balanced accuracy; R² and MAE labelled as such; per-site evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from veil.data import load_sites
from veil.errors import DataError
from veil.models.metrics import (
    classification_metrics,
    evaluate_model,
    evaluate_sites,
    metrics_table,
    regression_metrics,
    summarise_sites,
)


def _logits(p1: list[float]) -> np.ndarray:
    p = np.asarray(p1)
    return np.log(np.stack([1 - p, p], axis=1))


def test_binary_metrics_match_hand_computed_values() -> None:
    m = classification_metrics(np.array([0, 0, 1, 1]), _logits([0.1, 0.6, 0.4, 0.9]), 2)
    v = m.values
    assert v["accuracy"] == 0.5 and v["balanced_accuracy"] == 0.5
    assert v["auc"] == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs ordered
    assert v["f1"] == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    ce = -np.mean(np.log([0.9, 0.4, 0.4, 0.9]))
    assert v["cross_entropy"] == pytest.approx(ce)
    assert m.label("f1") == "F1 (positive class)" and m.primary == ("accuracy", 0.5)


def test_imbalanced_data_shows_what_accuracy_hides() -> None:
    y = np.array([0] * 9 + [1])
    m = classification_metrics(y, _logits([0.2] * 9 + [0.3]), 2)  # always predicts 0
    assert m.values["accuracy"] == pytest.approx(0.9)
    assert m.values["balanced_accuracy"] == pytest.approx(0.5) and m.values["f1"] == 0.0
    assert m.values["auc"] == pytest.approx(1.0)  # the ranking is still perfect


def test_undefined_metrics_are_null_with_a_reason_never_nan() -> None:
    m = classification_metrics(np.array([1, 1, 1]), _logits([0.7, 0.8, 0.4]), 2)
    assert m.values["auc"] is None and "one class" in m.notes["auc"]
    text = json.dumps(m.to_dict(), allow_nan=False)
    assert json.loads(text)["auc"] is None
    r = regression_metrics(np.array([2.0, 2.0]), np.array([1.0, 3.0]))
    assert r.values["r2"] is None and "constant" in r.notes["r2"] and r.values["mae"] == 1.0


def test_multiclass_with_a_class_missing_from_the_test_data() -> None:
    y = np.array([0, 1, 1, 0])
    s = np.array([[3.0, 0, 0], [0, 3, 0], [3, 0, 0], [3, 0, 0]])
    m = classification_metrics(y, s, 3)
    assert m.values["accuracy"] == 0.75
    # class 0: P 2/3, R 1 -> F1 0.8; class 1: P 1, R 1/2 -> F1 2/3; class 2 absent: left out
    assert m.values["f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert "2 classes present" in m.notes["auc"] and m.label("f1").startswith("F1 (macro")


def test_regression_is_r2_and_mae_not_accuracy() -> None:
    r = regression_metrics(np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 3, 5]))
    assert r.values["r2"] == pytest.approx(1 - 1 / 5) and r.values["mae"] == 0.25
    assert r.values["mse"] == 0.25 and r.values["rmse"] == 0.5
    assert "accuracy" not in r.values and r.primary[0] == "r2"
    assert r.label("r2").startswith("R²") and r.label("mae").startswith("MAE")


def test_bad_inputs_are_typed_errors() -> None:
    with pytest.raises(DataError, match="expected"):
        classification_metrics(np.array([0, 1]), np.zeros((2, 3)), 2)
    with pytest.raises(DataError, match="class ids"):
        classification_metrics(np.array([0, 5]), np.zeros((2, 2)), 2)
    with pytest.raises(DataError, match="NaN"):
        regression_metrics(np.array([1.0]), np.array([np.nan]))


def test_per_site_evaluation_on_each_sites_holdout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = []
    for name in ("north", "south"):
        v = rng.uniform(0, 10, size=40)
        y = (v > 5).astype(int)
        rows = "\n".join(f"{a:.3f},{b}" for a, b in zip(v, y))
        (tmp_path / f"{name}.csv").write_text("v,y\n" + rows + "\n")
        files.append({"path": str(tmp_path / f"{name}.csv"), "holdout": 0.5})
    data = load_sites(files, {"label": {"name": "y", "classes": [0, 1]},
                              "numeric": [{"name": "v", "range": [0, 10]}]}, seed=1)
    model = nn.Linear(1, 2)
    with torch.no_grad():  # a fixed rule: class 1 iff v > 0.5 (on the public [0, 1] scale)
        model.weight.copy_(torch.tensor([[-10.0], [10.0]]))
        model.bias.copy_(torch.tensor([5.0, -5.0]))
    model.train()
    per_site = evaluate_sites(model, data)
    assert set(per_site) == {"north", "south"} and model.training  # mode restored
    for s in data.sites:
        m = per_site[s.name]
        assert m.n == len(s.y_test) == 20
        assert m.values["accuracy"] == 1.0 and m.values["auc"] == 1.0
    summary = summarise_sites(per_site)
    assert summary["accuracy"]["n_sites"] == 2 and summary["accuracy"]["mean"] == 1.0
    with pytest.raises(DataError, match="site 'empty'"):
        evaluate_sites(model, {"empty": (np.zeros((0, 1)), np.zeros(0))}, "classification", 2)


def test_summary_names_the_worst_site() -> None:
    good = regression_metrics(np.array([1.0, 2, 3]), np.array([1.0, 2, 3]))
    bad = regression_metrics(np.array([1.0, 2, 3]), np.array([3.0, 2, 1]))
    s = summarise_sites({"a": good, "b": bad})
    assert s["r2"]["worst_site"] == "b" and s["mae"]["worst_site"] == "b"


def test_evaluate_model_regression_output_column() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0]]))
        model.bias.zero_()
    x = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 0.5]], dtype=np.float32)
    m = evaluate_model(model, x, np.array([2.0, 2.0, 0.5]), "regression", 1)
    assert m.values["r2"] == pytest.approx(1.0) and m.values["mae"] == pytest.approx(0.0)


def test_metrics_table_labels_and_undefined_cells() -> None:
    a = classification_metrics(np.array([0, 1]), _logits([0.2, 0.9]), 2)
    b = classification_metrics(np.array([1, 1]), _logits([0.2, 0.9]), 2)
    header, rows = metrics_table({"a": a, "b": b})
    assert header == ["site", "n", "accuracy", "balanced accuracy", "F1", "ROC AUC",
                      "cross-entropy"]
    assert rows[0][:3] == ["a", "2", "1.000"] and rows[1][5] == "–"  # AUC undefined at b
    h, _ = metrics_table({"r": regression_metrics(np.array([1.0, 2]), np.array([1.0, 2]))})
    assert h[2:4] == ["R²", "MAE"]


def test_metrics_round_trip_through_a_record() -> None:
    from veil.models.metrics import Metrics

    m = classification_metrics(np.array([1, 1]), _logits([0.3, 0.8]), 2)
    back = Metrics.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back == m
    with pytest.raises(DataError, match="not a metrics record"):
        Metrics.from_dict({"accuracy": 0.5})
