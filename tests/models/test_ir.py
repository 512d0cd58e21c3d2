"""IR: torch and scikit-learn models described exactly (reference evaluator vs the library)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits
from torch import nn

from veil.errors import ConfigError
from veil.models import SmallCNN
from veil.models.ir import (
    Conv2d,
    Linear,
    UnsupportedModelError,
    evaluate,
    from_sklearn,
    from_torch,
    predict,
)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):  # sklearn fits thrash a shared 2-core machine otherwise
        yield


def _torch_out(m: nn.Module, x: np.ndarray) -> np.ndarray:
    m.eval()
    with torch.no_grad():
        return m.double()(torch.from_numpy(x)).numpy()


def test_sequential_with_all_layer_kinds_matches_torch() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, stride=1), nn.GELU(), nn.AvgPool2d(2, stride=1),
        nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Sigmoid(), nn.Dropout(0.5),
        nn.Linear(8, 5), nn.Tanh(), nn.Softmax(dim=-1),
    )
    with torch.no_grad():  # non-trivial batch-norm statistics
        for bn in (m[1], m[9]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    x = np.random.default_rng(0).normal(size=(6, 1, 8, 8))
    ir = from_torch(m, (1, 8, 8))
    assert sum(isinstance(la, Conv2d | Linear) for la in ir.layers) == 4  # BN folded away
    np.testing.assert_allclose(evaluate(ir, x), _torch_out(m, x), atol=1e-10)
    assert ir.output_shape == (5,)


def test_traced_module_with_functional_calls() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(10, 6), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x.view(x.shape[0], -1))))

    torch.manual_seed(1)
    net = Net()
    x = np.random.default_rng(1).normal(size=(4, 10))
    with pytest.raises(UnsupportedModelError):  # x.shape[0] in view is traced as a node
        from_torch(net, (10,))

    class Net2(Net):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.argmax(torch.sigmoid(self.b(torch.relu(self.a(x.flatten(1))))), dim=-1)

    torch.manual_seed(1)
    net2 = Net2()
    ir = from_torch(net2, (10,))
    np.testing.assert_array_equal(predict(ir, x), _torch_out(net2, x))


def test_zoo_cnn_matches_torch() -> None:
    torch.manual_seed(2)
    cnn = SmallCNN(1, 10, 8)
    x = np.random.default_rng(2).normal(size=(3, 1, 8, 8))
    np.testing.assert_allclose(evaluate(from_torch(cnn, (1, 8, 8)), x), _torch_out(cnn, x),
                               atol=1e-10)


def test_unsupported_layers_are_named() -> None:
    with pytest.raises(UnsupportedModelError, match="LSTM"):
        from_torch(nn.Sequential(nn.LSTM(4, 4)), (4,))

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.a(x)

    with pytest.raises(UnsupportedModelError, match="chain"):
        from_torch(Residual(), (4,))
    with pytest.raises(UnsupportedModelError, match="LeakyReLU"):
        from_torch(nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU()), (4,))
    from sklearn.svm import SVC

    x, y = load_breast_cancer(return_X_y=True)
    with pytest.raises(UnsupportedModelError, match="SVC"):
        from_sklearn(SVC().fit(x[:50], y[:50]))
    with pytest.raises(ConfigError, match="not fitted"):
        from_sklearn(Ridge())
    with pytest.raises(ConfigError, match="expects"):
        from_torch(nn.Sequential(nn.Linear(4, 4), nn.Linear(5, 2)), (4,))


def test_sklearn_linear_and_mlp_models_match() -> None:
    xd, yd = load_diabetes(return_X_y=True)
    for est in (LinearRegression(), Ridge(alpha=0.5)):
        est.fit(xd, yd)
        np.testing.assert_allclose(predict(from_sklearn(est), xd), est.predict(xd), rtol=1e-10)
    mlp_r = MLPRegressor(hidden_layer_sizes=(16,), max_iter=50, random_state=0).fit(xd, yd)
    np.testing.assert_allclose(predict(from_sklearn(mlp_r), xd), mlp_r.predict(xd), rtol=1e-9)
    xb, yb = load_breast_cancer(return_X_y=True)
    xb = (xb - xb.mean(0)) / xb.std(0)
    xg, yg = load_digits(return_X_y=True)
    for est, (x, y) in (
        (LogisticRegression(max_iter=500), (xb, yb)),
        (LogisticRegression(max_iter=100), (xg, yg)),
        (MLPClassifier(hidden_layer_sizes=(12,), activation="tanh", max_iter=60, random_state=0), (xb, yb)),
        (MLPClassifier(hidden_layer_sizes=(20,), max_iter=60, random_state=0), (xg, yg)),
    ):
        est.fit(x, y)
        np.testing.assert_array_equal(predict(from_sklearn(est), x), est.predict(x))


def test_sklearn_trees_and_forests_match() -> None:
    xd, yd = load_diabetes(return_X_y=True)
    rf = RandomForestRegressor(10, max_depth=4, random_state=0).fit(xd, yd)
    ir = from_sklearn(rf)
    assert ir.layers[0].depth() == 4
    np.testing.assert_allclose(predict(ir, xd), rf.predict(xd), rtol=1e-10)
    xb, yb = load_breast_cancer(return_X_y=True)
    for est in (RandomForestClassifier(20, max_depth=5, random_state=0),
                DecisionTreeClassifier(max_depth=6, random_state=0)):
        est.fit(xb, yb)
        np.testing.assert_array_equal(predict(from_sklearn(est), xb), est.predict(xb))
        np.testing.assert_allclose(evaluate(from_sklearn(est), xb), est.predict_proba(xb),
                                   atol=1e-12)


def test_save_load_round_trip(tmp_path) -> None:
    from veil.models.ir import load, save

    torch.manual_seed(3)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(32, 3), nn.Softmax(-1))
    xb, yb = load_breast_cancer(return_X_y=True)
    rf = RandomForestClassifier(3, max_depth=3, random_state=0).fit(xb, yb)
    x8 = np.random.default_rng(0).normal(size=(4, 1, 8, 8))
    for m, x in ((from_torch(cnn, (1, 8, 8)), x8), (from_sklearn(rf), xb[:20])):
        back = load(save(m, tmp_path / "m.npz"))
        np.testing.assert_array_equal(evaluate(back, x), evaluate(m, x))
        assert back.task == m.task and back.input_shape == m.input_shape
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a veil model"):
        load(tmp_path / "bad.npz")
