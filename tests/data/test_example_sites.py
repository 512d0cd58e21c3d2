"""The example hospital files and schema (examples/own_sites) load, one site at a time."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

from veil.data import load_sites

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_sites"


def test_example_hospitals_load_per_site() -> None:
    schema = tomllib.loads((EXAMPLE / "schema.toml").read_text())
    data = load_sites(
        [{"path": "hospital_a.csv"}, {"path": "hospital_b.csv", "holdout": 0.25},
         {"path": "hospital_c.csv", "test": "hospital_c_test.csv"}],
        schema, seed=0, base_dir=EXAMPLE,
    )
    assert [s.name for s in data.sites] == ["hospital_a", "hospital_b", "hospital_c"]
    assert data.input_shape == (8,)  # age, bmi, bmi_missing, sex x2, smoker x2, stage
    b = data.sites[1]
    assert len(b.y_train) + len(b.y_test) == 120 and set(b.y_train.tolist()) == {0, 1}
    assert data.sites[2].test_source.startswith("file ") and len(data.sites[2].y_test) == 40
    for s in data.sites:
        assert np.isfinite(s.x_train).all() and np.isfinite(s.x_test).all()
