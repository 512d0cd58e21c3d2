"""Models ``veil recommend`` and ``veil infer --backend fhe`` can name without a file.

Each is trained here, quickly and with a fixed seed, on a bundled scikit-learn data set
(no downloads), and returned with calibration inputs and a request input. A run directory
(``model.pt`` + ``model.json`` from ``veil train``) is the other kind of MODEL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from veil.errors import ConfigError, DataError
from veil.models.ir import Model, from_sklearn, from_torch

__all__ = ["NamedModel", "NAMED_MODELS", "resolve_model"]


@dataclass
class NamedModel:
    """A model with data to calibrate on and to send."""

    model: Model
    calibration: np.ndarray
    inputs: np.ndarray


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


def _logreg() -> NamedModel:
    from sklearn.linear_model import LogisticRegression

    x, y = _digits()
    m = from_sklearn(LogisticRegression(max_iter=300).fit(x[:1500], y[:1500]), name="digits-logreg")
    return NamedModel(m, x[:1500], x[1500:])


def _mlp() -> NamedModel:
    import warnings

    from sklearn.neural_network import MLPClassifier

    x, y = _digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((32,), max_iter=200, random_state=0).fit(x[:1500], y[:1500])
    return NamedModel(from_sklearn(est, name="digits-mlp"), x[:1500], x[1500:])


def _cnn() -> NamedModel:
    import torch

    x, y = _digits()
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 10),
    )
    xt = torch.tensor(x[:1500], dtype=torch.float32).reshape(-1, 1, 8, 8)
    yt = torch.tensor(y[:1500])
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    m = from_torch(net.eval(), (1, 8, 8), name="digits-cnn")
    return NamedModel(m, x[:1500].reshape(-1, 1, 8, 8), x[1500:].reshape(-1, 1, 8, 8))


def _linreg() -> NamedModel:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    x, y = load_diabetes(return_X_y=True)
    return NamedModel(from_sklearn(LinearRegression().fit(x[:300], y[:300]),
                                   name="diabetes-linreg"), x[:300], x[300:])


def _forest() -> NamedModel:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    x, y = load_diabetes(return_X_y=True)
    est = RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0).fit(x[:300], y[:300])
    return NamedModel(from_sklearn(est, name="diabetes-rf"), x[:300], x[300:])


NAMED_MODELS: dict[str, Callable[[], NamedModel]] = {
    "digits-logreg": _logreg,
    "digits-mlp": _mlp,
    "digits-cnn": _cnn,
    "diabetes-linreg": _linreg,
    "diabetes-rf": _forest,
}


def resolve_model(name: str, data: str | None = None) -> NamedModel:
    """A named model, or a veil run directory with calibration/request inputs from ``data``.

    Args:
        name: one of :data:`NAMED_MODELS`, or a run directory.
        data: a ``.npy`` file of inputs (N, *input_shape) (needed for a run directory).

    Raises:
        ConfigError: unknown name, or a run directory without ``data``.
        DataError: unreadable files.
    """
    if name in NAMED_MODELS:
        return NAMED_MODELS[name]()
    p = Path(name)
    if not p.is_dir():
        raise ConfigError(f"MODEL {name!r} is neither a run directory nor one of "
                          f"{sorted(NAMED_MODELS)}", key="model")
    if data is None:
        raise ConfigError("a run directory needs --data INPUTS.npy (inputs to calibrate on "
                          "and to send)", key="data")
    try:
        x = np.load(data, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {data}: {e}") from None
    from veil.models.export import load_model

    module = load_model(p)
    return NamedModel(from_torch(module, tuple(x.shape[1:]), name=p.name), x, x)
