"""Feature tiers and pruning: the description is applied exactly, and costs are measured."""

from __future__ import annotations

import numpy as np
import pytest

from veil.data.pruning import (
    ColumnRole,
    DataDescription,
    apply_description,
    pruning_costs,
)
from veil.errors import ConfigError

DESC = {
    "identifiers": ["pid"],
    "sensitive": ["diagnosis"],
    "quasi_identifiers": {"age": {"width": 10}, "zip": {}, "region": {"map": {"NE": "N",
                                                                              "NW": "N"}}},
}


def _table(n: int, seed: int) -> dict[str, np.ndarray]:
    """diagnosis depends on zip (strongly) and age (weakly, coarse); pid is a random id."""
    rng = np.random.default_rng(seed)
    zip_ = rng.choice(np.array(["10115", "20095", "80331", "50667"]), n)
    age = rng.uniform(20, 80, n)
    logit = np.where(np.isin(zip_, ["10115", "20095"]), 2.0, -2.0) + (age - 50) / 15
    diag = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return {"pid": np.array([f"p{seed}-{i}" for i in range(n)], dtype=object), "age": age,
            "zip": zip_, "region": rng.choice(np.array(["NE", "NW", "S"]), n),
            "noise": rng.normal(size=n), "diagnosis": diag}


def test_description_is_applied_exactly() -> None:
    desc = DataDescription.from_dict(DESC)
    t = _table(50, 0)
    out, rep = apply_description(t, desc, keep=["diagnosis"])
    assert set(out) == {"age", "region", "noise", "diagnosis"}
    assert rep.dropped == {"pid": "identifier", "zip": "quasi-identifier without a rule"}
    assert set(rep.generalised) == {"age", "region"}
    assert np.all(out["age"] % 10 == 0) and np.all(out["age"] <= t["age"])
    assert set(out["region"]) <= {"N", "S"}
    np.testing.assert_array_equal(out["noise"], t["noise"])
    assert rep.undescribed == ["noise"]
    assert desc.role("noise") == ColumnRole.ORDINARY and desc.sensitive == ["diagnosis"]


def test_each_removed_feature_reports_its_accuracy_cost() -> None:
    desc = DataDescription.from_dict(DESC)
    rep = pruning_costs(_table(1200, 1), _table(1000, 2), desc, label="diagnosis")
    assert rep.accuracy_before is not None and rep.accuracy_after is not None
    # zip carries most of the signal: dropping it costs > 10 points (fixed seeds; the
    # measured gap is about 25 points; 1000 test rows give a standard error near 1.5 points)
    assert rep.costs["zip"] > 0.10
    assert rep.accuracy_before - rep.accuracy_after > 0.10
    # a random identifier and a coarsened age cost little
    assert abs(rep.costs["pid"]) < 0.03
    assert abs(rep.costs["age"]) < 0.03
    assert set(rep.costs) == {"pid", "zip", "age", "region"}


def test_bad_descriptions_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="two roles"):
        DataDescription.from_dict({"identifiers": ["a"], "sensitive": ["a"]})
    with pytest.raises(ConfigError, match="unknown keys"):
        DataDescription.from_dict({"identifier": ["a"]})
    with pytest.raises(ConfigError, match="exactly one"):
        DataDescription.from_dict({"quasi_identifiers": {"a": {"width": 1, "keep_prefix": 2}}})
    with pytest.raises(ConfigError, match="lacks"):
        apply_description({"b": np.arange(3)}, DataDescription.from_dict({"identifiers": ["a"]}))
