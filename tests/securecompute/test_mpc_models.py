"""The model zoo through three in-process parties, against plaintext / the library."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.tree import DecisionTreeRegressor
from threadpoolctl import threadpool_limits
from torch import nn

from veil.errors import ConfigError
from veil.models.ir import evaluate, from_sklearn, from_torch, predict
from veil.securecompute.mpc import MpcSession, infer


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):  # sklearn fits thrash a shared 2-core machine otherwise
        yield


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


def _agree(model, x):
    with MpcSession(model) as s:
        out = s.infer(x).output
    return float(np.mean(np.argmax(out, 1) == predict(model, x))), out


def test_digits_mlp_and_breast_cancer_classifiers_agree(digits) -> None:
    x, y = digits
    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=150, random_state=0).fit(x[:1200], y[:1200])
    agree, out = _agree(from_sklearn(mlp), x[1200:])
    assert agree >= 0.995
    assert np.abs(out - evaluate(from_sklearn(mlp), x[1200:])).max() < 1e-2
    xb, yb = load_breast_cancer(return_X_y=True)
    xb = (xb - xb[:400].mean(0)) / xb[:400].std(0)
    for est in (LogisticRegression(max_iter=1000),
                MLPClassifier(hidden_layer_sizes=(16,), activation="tanh", max_iter=500,
                              random_state=0)):
        est.fit(xb[:400], yb[:400])
        agree, _ = _agree(from_sklearn(est), xb[400:])
        assert agree >= 0.995, type(est).__name__


def test_linear_regression_within_1e3_relative() -> None:
    x, y = load_diabetes(return_X_y=True)
    lr = LinearRegression().fit(x, y)
    res = infer(from_sklearn(lr), x[:100])
    rel = np.abs(res.output[:, 0] - lr.predict(x[:100])) / np.abs(lr.predict(x[:100]))
    assert rel.max() < 1e-3
    s = res.summary()
    assert s["rounds"] == 2 and s["bytes"] > 0  # one product fused with truncation (2 rounds)


def test_forests_identical_to_sklearn() -> None:
    x, y = load_diabetes(return_X_y=True)
    for est in (RandomForestRegressor(10, max_depth=4, random_state=0),
                DecisionTreeRegressor(max_depth=3, random_state=0)):
        est.fit(x, y)
        out = infer(from_sklearn(est), x).output[:, 0]
        # same leaves as sklearn for every sample; values to the fixed-point resolution
        assert np.abs(out - est.predict(x)).max() < 1e-3
    xb, yb = load_breast_cancer(return_X_y=True)
    rf = RandomForestClassifier(15, max_depth=5, random_state=0).fit(xb[:400], yb[:400])
    out = infer(from_sklearn(rf), xb[400:]).output
    np.testing.assert_array_equal(np.argmax(out, 1), rf.predict(xb[400:]))
    np.testing.assert_allclose(out, rf.predict_proba(xb[400:]), atol=1e-3)


def test_torch_cnn_with_every_layer_kind(digits) -> None:
    x, _ = digits
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(24, 16), nn.GELU(), nn.Linear(16, 10), nn.Sigmoid(),
        nn.Linear(10, 10), nn.Softmax(dim=-1),
    ).eval()
    model = from_torch(cnn, (1, 8, 8))
    xi = x[:40].reshape(-1, 1, 8, 8)
    out = infer(model, xi).output
    np.testing.assert_allclose(out, evaluate(model, xi), atol=2e-3)
    arg = from_torch(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (1, 8, 8))
    from veil.models.ir import Argmax, Model

    with_arg = Model(arg.input_shape, (*arg.layers, Argmax()), task="classification")
    got = infer(with_arg, xi).output[:, 0]
    np.testing.assert_array_equal(got, predict(with_arg, xi))


def test_inputs_outside_the_fixed_point_range_are_refused() -> None:
    x, y = load_diabetes(return_X_y=True)
    with pytest.raises(ConfigError, match="fixed point"):
        infer(from_sklearn(LinearRegression().fit(x, y)), np.full((1, 10), 1e15))
