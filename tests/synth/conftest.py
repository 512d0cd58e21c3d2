"""A small correlated table with a public schema, shared by the synthesis tests."""

from __future__ import annotations

import numpy as np
import pytest
from synth_tables import make_table

from veil.synth.schema import CategoricalColumn, NumericColumn, TableSchema


@pytest.fixture(scope="session")
def schema() -> TableSchema:
    return TableSchema((NumericColumn("x", 0, 10, bins=4), CategoricalColumn("c", ("a", "b", "c")),
                        CategoricalColumn("y", (0, 1))), label="y")


@pytest.fixture(scope="session")
def real() -> dict[str, np.ndarray]:
    return make_table(3000, 0)


@pytest.fixture(scope="session")
def holdout() -> dict[str, np.ndarray]:
    return make_table(3000, 1)
