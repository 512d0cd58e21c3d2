"""The measured reason forests go to mpc: the CKKS forest circuit (soft comparisons + path
products) in plaintext equals the exact forest with an exact sign, and loses accuracy with the
composite sign; the error message quotes the recorded measurement."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor

from veil.models.ir import TreeEnsemble, UnsupportedModelError, evaluate, from_sklearn
from veil.securecompute.fhe import compile_model
from veil.securecompute.fhe.forest_probe import RECORD, measure_forest, soft_forest


@pytest.fixture(scope="module")
def forest():
    x, y = load_diabetes(return_X_y=True)
    est = RandomForestRegressor(n_estimators=4, max_depth=4, random_state=0).fit(x, y)
    return from_sklearn(est), x


def test_circuit_with_an_exact_sign_is_the_forest(forest) -> None:
    model, x = forest
    (layer,) = [la for la in model.layers if isinstance(la, TreeEnsemble)]
    ranges = np.ones(x.shape[1])
    got = soft_forest(layer, x[:200], lambda d: np.where(d >= 0, 1.0, -1.0), ranges)
    assert np.allclose(got, evaluate(model, x[:200]).reshape(200, -1), atol=1e-9)


def test_composite_sign_forest_is_approximate_and_deep(forest) -> None:
    model, x = forest
    rec = measure_forest(model, x[:300], x, time_ckks=False)
    assert rec["circuit_depth"] >= 16 and rec["ring"] == 32768
    assert rec["margin_below_eps_fraction"] > 0  # some inputs sit within ε of a threshold
    assert rec["max_abs_err"] > 1e-3  # so the leaves are not exact (mpc's are)


def test_forest_error_quotes_the_recorded_measurement(forest) -> None:
    model, x = forest
    assert RECORD.exists(), "benchmarks/fhe-forest-probe.json is the recorded measurement"
    with pytest.raises(UnsupportedModelError, match=r"measured for rf-10x10.*--backend mpc"):
        compile_model(model, x)
