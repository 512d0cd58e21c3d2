"""IR models end-to-end under CKKS against the plaintext reference, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier

from veil.models.ir import Linear, MaxPool2d, Model, UnsupportedModelError, evaluate, from_sklearn
from veil.securecompute.fhe import approx_forward, compile_model
from veil.securecompute.fhe.run import run_inference


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


def test_linear_regression_matches_plaintext() -> None:
    x, y = load_diabetes(return_X_y=True)
    model = from_sklearn(LinearRegression().fit(x[:300], y[:300]))
    rng = np.random.default_rng(0)
    xs = x[300:305] + rng.normal(scale=0.01, size=(5, x.shape[1]))  # random inputs near the data
    want = evaluate(model, xs)
    for row, ref in zip(xs, want):
        res = run_inference(model, row[None], x[:300])
        assert abs(res.outputs[0, 0] - ref[0]) <= 1e-3 * max(1.0, abs(ref[0])), (res.outputs, ref)
    batch = run_inference(model, xs, x[:300])  # SIMD: several samples per ciphertext
    assert np.max(np.abs(batch.outputs - want) / np.maximum(1.0, np.abs(want))) < 1e-3


def test_logistic_regression_agrees_with_plaintext_argmax() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    model = from_sklearn(LogisticRegression(max_iter=500).fit(x[:400], y[:400]))
    res = run_inference(model, x[400:460], x[:400])
    want = evaluate(model, x[400:460])
    assert np.max(np.abs(res.outputs - want)) < 1e-2
    assert np.array_equal(res.outputs.argmax(1), want.argmax(1))
    assert res.bytes_up > 0 and res.bytes_down > 0 and res.bytes_keys > res.bytes_down


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_with_polynomial_activation_matches_compiled_circuit(digits) -> None:
    x, y = digits
    est = MLPClassifier((16,), max_iter=60, random_state=0).fit(x[:1200], y[:1200])
    model = from_sklearn(est)
    comp = compile_model(model, x[:1200], degree=3)
    xs = x[1200:1208]
    res = run_inference(model, xs, x[:1200], compiled=comp)
    circuit = approx_forward(comp, model, xs)
    assert np.max(np.abs(res.outputs - circuit)) < 5e-2  # CKKS noise only
    (act,) = comp.report["activations"]
    assert act["activation"] == "relu" and act["lo"] < 0 < act["hi"]
    # accuracy cost of the approximation, on held-out data, stays small for this model
    agree = (approx_forward(comp, model, x[1200:]).argmax(1) == evaluate(model, x[1200:]).argmax(1))
    assert agree.mean() > 0.9


def test_forests_and_maxpool_are_routed_to_mpc() -> None:
    x, y = load_diabetes(return_X_y=True)
    rf = from_sklearn(RandomForestRegressor(n_estimators=2, max_depth=2, random_state=0).fit(x, y))
    with pytest.raises(UnsupportedModelError, match="mpc"):
        compile_model(rf, x)
    cnn = Model((1, 4, 4), (MaxPool2d((2, 2), (2, 2)),))
    with pytest.raises(UnsupportedModelError, match="AvgPool2d"):
        compile_model(cnn, np.zeros((2, 1, 4, 4)))


def test_conv_and_avgpool_fold_into_one_dense_map() -> None:
    import torch

    from veil.models.ir import from_torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(2 * 4 * 4, 3),
    )
    model = from_torch(net, (1, 8, 8))
    rng = np.random.default_rng(1)
    xs = rng.uniform(0, 1, size=(4, 1, 8, 8))
    comp = compile_model(model, xs)
    # one matrix for conv + pool + linear, and as the only map it needs no rescale (depth 0)
    assert comp.depth == 0 and len(comp.steps) == 1
    res = run_inference(model, xs, xs, compiled=comp)
    assert np.max(np.abs(res.outputs - evaluate(model, xs))) < 1e-3


def test_wrong_input_width_is_a_config_error() -> None:
    from veil.errors import ConfigError
    from veil.securecompute.fhe import FheClient

    model = Model((4,), (Linear(np.ones((1, 4)), np.zeros(1)),))
    comp = compile_model(model, np.zeros((3, 4)))
    with pytest.raises(ConfigError):
        FheClient(comp.plan).encrypt(np.zeros((2, 5)))
