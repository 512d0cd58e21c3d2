"""The public schema: bins from stated ranges only, clipping, categories, TOML parsing."""

from __future__ import annotations

import numpy as np
import pytest

from veil.errors import ConfigError, DataError
from veil.synth.schema import CategoricalColumn, NumericColumn, TableSchema


def test_bin_edges_come_from_the_public_range_not_the_data() -> None:
    col = NumericColumn("age", 0, 100, bins=4)
    a = col.encode(np.array([1.0, 30.0, 60.0, 99.0]))
    b = col.encode(np.array([1.0, 30.0, 60.0, 99.0, 2000.0, -5.0]))  # outliers change nothing
    assert a.tolist() == [0, 1, 2, 3]
    assert b[:4].tolist() == a.tolist()
    assert b[4:].tolist() == [3, 0]  # clipped into the end bins
    np.testing.assert_allclose(col.edges(), [0, 25, 50, 75, 100])


def test_decode_draws_inside_the_bin() -> None:
    col = NumericColumn("x", 10, 20, bins=5, scale="log")
    codes = np.arange(5).repeat(200)
    v = col.decode(codes, np.random.default_rng(0))
    assert (v >= 10).all() and (v <= 20).all()
    assert (col.encode(v) == codes).all()
    e = col.edges()
    assert e[1] - e[0] < e[-1] - e[-2]  # log bins widen


def test_categories_and_errors() -> None:
    sex = CategoricalColumn("sex", ("F", "M"))
    assert sex.encode(np.array(["M", "F", "M"])).tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="categories"):
        sex.encode(np.array(["X"]))
    lab = CategoricalColumn("y", (0, 1))
    assert lab.encode(np.array([1.0, 0.0, "1"], dtype=object)).tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="NaN"):
        NumericColumn("x", 0, 1).encode(np.array([np.nan]))
    with pytest.raises(ConfigError):
        NumericColumn("x", 1, 1)
    with pytest.raises(ConfigError):
        CategoricalColumn("c", ("a",))


def test_schema_from_dict_round_trip_and_bad_keys() -> None:
    d = {"label": "y", "columns": [
        {"name": "age", "type": "numeric", "low": 0, "high": 90, "bins": 6, "integer": True},
        {"name": "y", "type": "categorical", "categories": ["no", "yes"]}]}
    s = TableSchema.from_dict(d)
    assert s.sizes == {"age": 6, "y": 2}
    assert TableSchema.from_dict(s.to_dict()) == s
    with pytest.raises(ConfigError, match=r"schema.columns\[0\]"):
        TableSchema.from_dict({"columns": [{"name": "a", "low": 0, "high": 1, "bin": 3},
                                           {"name": "b", "low": 0, "high": 1}]})
    with pytest.raises(ConfigError, match="label"):
        TableSchema.from_dict({**d, "label": "nope"})
    with pytest.raises(DataError, match="lacks"):
        s.encode({"age": np.array([1.0])})


def test_features_scale_by_public_range_and_one_hot() -> None:
    s = TableSchema((NumericColumn("a", 0, 10), CategoricalColumn("c", ("x", "y", "z")),
                     CategoricalColumn("y", (0, 1))), label="y")
    f = s.features({"a": np.array([5.0, 20.0]), "c": np.array(["z", "x"]),
                    "y": np.array([0, 1])})
    np.testing.assert_allclose(f, [[0.5, 0, 0, 1], [1.0, 1, 0, 0]])
    assert s.labels({"y": np.array([1, 0])}).tolist() == [1, 0]


def test_missing_extra_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from veil.synth.mechanisms import load_mbi

    monkeypatch.setitem(sys.modules, "mbi", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"\.\[synth\]"):
        load_mbi()


def test_from_the_site_file_schema_keeps_declared_ranges_and_categories() -> None:
    from veil.data.schema import parse_schema

    site = parse_schema({
        "label": {"name": "outcome", "classes": [0, 1]},
        "numeric": [{"name": "age", "range": [0, 120]}],
        "categorical": [{"name": "sex", "categories": ["F", "M"]}],
    })
    s = TableSchema.from_data_schema(site, bins=6)
    assert s.names == ["age", "sex", "outcome"] and s.label == "outcome"
    assert s.sizes == {"age": 6, "sex": 2, "outcome": 2}
    assert s.column("outcome").encode(np.array(["1.0", " 0", 1])).tolist() == [1, 0, 1]
    no_range = parse_schema({"label": {"name": "y", "classes": [0, 1]},
                             "numeric": [{"name": "bmi"}]})
    with pytest.raises(ConfigError, match="public range"):
        TableSchema.from_data_schema(no_range)
