"""Each site's own file with a declared schema: parsing, per-site fitting, errors, formats."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from veil.data import (
    Schema,
    SiteSource,
    canonical_value,
    load_site,
    load_sites,
    parse_schema,
    parse_sources,
)
from veil.errors import ConfigError, DataError

SCHEMA = {
    "label": {"name": "outcome", "classes": [0, 1]},
    "numeric": [
        {"name": "age", "range": [0, 100], "missing": "median"},
        {"name": "bmi", "scale": "site", "missing": "mean", "indicator": True},
    ],
    "categorical": [
        {"name": "sex", "categories": ["F", "M"], "missing": "most_frequent"},
        {"name": "stage", "categories": ["I", "II", "III"], "encoding": "ordinal",
         "missing": "constant", "fill": "I"},
    ],
    "ignore": ["patient_id"],
}


def _csv(path: Path, rows: list[str], header: str = "patient_id,age,bmi,sex,stage,outcome") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _hospitals(tmp_path: Path) -> list[Path]:
    a = _csv(tmp_path / "a.csv", [
        "1,20,20,F,I,0", "2,30,22,M,II,1.0", "3,,24,F,III, 1", "4,40,NA,M,,0",
        "5,25,21,F,I,0", "6,35,23,,II,1",
    ])
    b = _csv(tmp_path / "b.csv", [
        "7,60,30,M,III,1", "8,70,32,M,II,0", "9,80,34,F,I,1", "10,90,36,M,III,0",
        "11,65,31,M,I,1", "12,75,33,M,II,0",
    ])
    c = _csv(tmp_path / "c.csv", [
        "13,50,25,F,II,0", "14,55,,F,I,1.0", "15,45,27,M,III,0", "16,50,26,F,I,1",
    ])
    return [a, b, c]


def test_canonical_labels_numbers_compare_as_numbers() -> None:
    assert {canonical_value(v) for v in ("1", "1.0", " 1 ", 1, 1.0, "1.000")} == {"1"}
    assert canonical_value("0.50") == canonical_value(0.5) == "0.5"
    assert canonical_value("M") != canonical_value("m")


def test_three_hospital_files_read_each_on_its_own(tmp_path: Path) -> None:
    files = _hospitals(tmp_path)
    srcs = [SiteSource(path=str(files[0]), test=None, holdout=0.5),
            {"path": str(files[1]), "name": "bravo", "holdout": 0.5},
            str(files[2])]
    data = load_sites(srcs, SCHEMA, seed=3)
    assert [s.name for s in data.sites] == ["a", "bravo", "c"]
    names = data.feature_names
    assert names == ["age", "bmi", "bmi_missing", "sex=F", "sex=M", "stage"]
    assert data.input_shape == (6,) and data.n_classes == 2
    # "1", "1.0" and " 1" are one class: only ids 0 and 1 appear
    ys = np.concatenate([np.concatenate([s.y_train, s.y_test]) for s in data.sites])
    assert set(ys.tolist()) == {0, 1} and ys.dtype == np.int64
    a = data.sites[0]
    assert len(a.y_train) + len(a.y_test) == 6 and "holdout 50%" in a.test_source
    rec = data.describe()
    assert rec["sites"][1]["name"] == "bravo" and rec["sites"][1]["n_train"] == 3
    assert "own training mean/std" in rec["sites"][0]["columns"]["bmi"]
    assert "per site" in rec["preprocessing"]
    assert [len(y) for _, y in data.train_pairs()] == [len(s.y_train) for s in data.sites]
    assert set(data.test_sets()) == {"a", "bravo", "c"}
    fed = data.to_arrays()
    assert [len(p) for p in fed.train_parts] == [len(s.y_train) for s in data.sites]
    np.testing.assert_array_equal(fed.dataset.x_test[fed.test_parts[2]], data.sites[2].x_test)


def test_fitted_steps_use_only_the_sites_own_rows(tmp_path: Path) -> None:
    files = _hospitals(tmp_path)
    schema = parse_schema(SCHEMA)
    # whole file as training data: a separate (copy) test file
    a = load_site(SiteSource(path=str(files[0]), test=str(files[0])), schema)
    b = load_site(SiteSource(path=str(files[1]), test=str(files[1])), schema)
    # per-site standardisation: each site's own bmi has mean 0 / std 1, although the
    # sites' bmi values (20-24 vs 30-36) would give means far from 0 if pooled
    for s in (a, b):
        col = s.x_train[:, 1]
        assert abs(col.mean()) < 1e-6 and abs(col.std() - 1) < 1e-5
    # a's missing bmi (line 5) is a's own mean (22), i.e. 0 after a's own standardisation
    assert a.x_train[3, 1] == pytest.approx(0.0, abs=1e-6) and a.x_train[3, 2] == 1.0
    # a's missing age (line 4) is a's own median (30 of 20,30,40,25,35) on the public range
    assert a.x_train[2, 0] == pytest.approx(0.30)
    # public range: the same raw age maps to the same feature at every site
    assert a.x_train[0, 0] == pytest.approx(0.20) and b.x_train[0, 0] == pytest.approx(0.60)
    # a's missing sex (line 7) is a's most frequent (F: 3 of 5), ordinal stage fill "I" -> 0
    assert a.x_train[5, 3:5].tolist() == [1.0, 0.0]
    assert a.x_train[3, 5] == 0.0 and b.x_train[0, 5] == 1.0  # "III" -> 2/2


def test_separate_test_file_uses_the_sites_training_fit(tmp_path: Path) -> None:
    files = _hospitals(tmp_path)
    test = _csv(tmp_path / "a_test.csv", ["99,50,30,M,II,1", "98,10,,F,III,0"])
    s = load_site(SiteSource(path=str(files[0]), test=str(test)), parse_schema(SCHEMA))
    assert s.test_source == f"file {test}" and len(s.y_test) == 2 and len(s.y_train) == 6
    bmi_train = np.array([20, 22, 24, 22, 21, 23], dtype=float)  # NA filled with mean 22
    mu, sd = bmi_train.mean(), bmi_train.std()
    assert s.x_test[0, 1] == pytest.approx((30 - mu) / sd, rel=1e-5)
    assert s.x_test[1, 1] == pytest.approx(0.0, abs=1e-6)  # test NA -> training mean
    assert s.y_test.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("5,abc,22,F,I,0", ["line 3", "'age'", "'abc'", "not a number"]),
        ("5,30,22,F,I,2", ["line 3", "'outcome'", "'2'", "declared classes"]),
        ("5,30,22,X,I,0", ["line 3", "'sex'", "'X'", "declared categories"]),
        ("5,130,22,F,I,0", ["line 3", "'age'", "'130'", "outside the declared range"]),
        ("5,30,22,F,I,", ["line 3", "'outcome'", "label is missing"]),
        ("5,30,22,F,I", ["line 3", "expected 6 fields"]),
    ],
)
def test_errors_name_file_line_column_and_value(
    tmp_path: Path, row: str, needle: list[str]
) -> None:
    f = _csv(tmp_path / "bad.csv", ["1,20,20,F,I,0", row])
    with pytest.raises(DataError) as ei:
        load_site(SiteSource(path=str(f), test=str(f)), parse_schema(SCHEMA))
    msg = str(ei.value)
    assert str(f) in msg
    for n in needle:
        assert n in msg, msg


def test_missing_not_allowed_unless_declared(tmp_path: Path) -> None:
    schema = {"label": {"name": "y", "classes": ["no", "yes"]}, "numeric": [{"name": "v"}]}
    f = _csv(tmp_path / "m.csv", ["1,no", "?,yes", "3,yes"], header="v,y")
    with pytest.raises(DataError, match=r"line 3, column 'v'.*missing"):
        load_site(SiteSource(path=str(f), test=str(f)), parse_schema(schema))


def test_undeclared_column_is_an_error_not_dropped(tmp_path: Path) -> None:
    f = _csv(tmp_path / "x.csv", ["1,20,20,F,I,0,7"],
             header="patient_id,age,bmi,sex,stage,outcome,zip")
    with pytest.raises(DataError, match=r"\['zip'\] are not in the schema"):
        load_site(SiteSource(path=str(f), test=str(f)), parse_schema(SCHEMA))
    f2 = _csv(tmp_path / "y.csv", ["1,20,F,0"], header="patient_id,age,sex,outcome")
    with pytest.raises(DataError, match="not in the header"):
        load_site(SiteSource(path=str(f2), test=str(f2)), parse_schema(SCHEMA))


def test_clip_and_ignore_options(tmp_path: Path) -> None:
    schema = parse_schema({
        "label": {"name": "y", "classes": [0, 1]},
        "numeric": [{"name": "v", "range": [0, 10], "outside": "clip"}],
        "categorical": [{"name": "k", "categories": ["a", "b"], "unknown": "ignore"}],
    })
    f = _csv(tmp_path / "c.csv", ["15,a,0", "-5,z,1", "5,b,1"], header="v,k,y")
    s = load_site(SiteSource(path=str(f), test=str(f)), schema)
    assert s.x_train[:, 0].tolist() == [1.0, 0.0, 0.5]
    assert s.x_train[1, 1:].tolist() == [0.0, 0.0]  # unknown category: all-zero one-hot


def test_holdout_is_seeded_stratified_and_survives_a_single_example_class(tmp_path: Path) -> None:
    rows = [f"{i},{i % 2}" for i in range(20)]
    f = _csv(tmp_path / "h.csv", rows, header="v,y")
    schema = parse_schema({"label": {"name": "y", "classes": [0, 1, 2]},
                           "numeric": [{"name": "v", "range": [0, 100]}]})
    s1 = load_site(SiteSource(path=str(f), holdout=0.25), schema, seed=5)
    s2 = load_site(SiteSource(path=str(f), holdout=0.25), schema, seed=5)
    np.testing.assert_array_equal(s1.x_test, s2.x_test)
    assert "stratified, seed 5" in s1.test_source
    assert sorted(s1.y_test.tolist()) in ([0, 0, 1, 1, 1], [0, 0, 0, 1, 1])  # 2-3 of each
    f1 = _csv(tmp_path / "one.csv", rows + ["99,2"], header="v,y")
    s3 = load_site(SiteSource(path=str(f1), holdout=0.25), schema, seed=5)
    assert "not stratified" in s3.test_source
    assert len(s3.y_train) + len(s3.y_test) == 21


def test_sites_get_different_holdout_seeds(tmp_path: Path) -> None:
    rows = [f"{i},{i % 2}" for i in range(40)]
    f = _csv(tmp_path / "same.csv", rows, header="v,y")
    schema = {"label": {"name": "y", "classes": [0, 1]},
              "numeric": [{"name": "v", "range": [0, 40]}]}
    d = load_sites([{"path": str(f), "name": "s1"}, {"path": str(f), "name": "s2"}], schema, seed=0)
    assert d.sites[0].test_source != d.sites[1].test_source
    assert not np.array_equal(d.sites[0].x_test, d.sites[1].x_test)


def test_npz_and_idx_sites(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 4, 4)).astype(np.uint8)
    np.savez(tmp_path / "s1.npz", x=x[:, None], y=np.array([1.0, 0.0] * 5))
    d = tmp_path / "s2"
    d.mkdir()
    for stem, arr in [("train-images-idx3-ubyte", x),
                      ("train-labels-idx1-ubyte", np.arange(10) % 2),
                      ("t10k-images-idx3-ubyte", x[:3]), ("t10k-labels-idx1-ubyte", np.ones(3))]:
        a = np.asarray(arr).astype(np.uint8)
        head = bytes([0, 0, 0x08, a.ndim]) + struct.pack(">" + "I" * a.ndim, *a.shape)
        with gzip.open(d / (stem + ".gz"), "wb") as fh:
            fh.write(head + a.tobytes())
    schema = {"label": {"name": "y", "classes": [0, 1]}, "array": {"range": [0, 255]}}
    data = load_sites([{"path": str(tmp_path / "s1.npz"), "holdout": 0.3},
                       {"path": str(d), "test": str(d)}], schema)
    s1, s2 = data.sites
    assert data.input_shape == (1, 4, 4)
    assert s2.x_train.shape == (10, 1, 4, 4) and s2.x_test.shape == (3, 1, 4, 4)
    assert "t10k-images" in s2.test_source and s2.y_test.tolist() == [1, 1, 1]
    assert 0.0 <= s2.x_train.min() and s2.x_train.max() <= 1.0
    assert set(s1.y_train.tolist()) <= {0, 1}


def test_arrays_of_different_shapes_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((6, 3)), y=np.array([0, 1] * 3))
    np.savez(tmp_path / "b.npz", x=np.zeros((6, 4)), y=np.array([0, 1] * 3))
    with pytest.raises(DataError, match=r"site 'b'.*same features"):
        load_sites([str(tmp_path / "a.npz"), str(tmp_path / "b.npz")],
                   {"label": {"classes": [0, 1]}})


def test_npz_bad_values_and_pickles_refused(tmp_path: Path) -> None:
    schema = Schema.model_validate({"label": {"classes": [0, 1]}})
    np.savez(tmp_path / "nan.npz", x=np.array([[1.0], [np.nan]]), y=np.array([0, 1]))
    with pytest.raises(DataError, match="example 1, feature 0"):
        load_site(SiteSource(path=str(tmp_path / "nan.npz")), schema)
    np.savez(tmp_path / "lab.npz", x=np.zeros((3, 1)), y=np.array([0, 1, 7]))
    with pytest.raises(DataError, match=r"example 2: label 7"):
        load_site(SiteSource(path=str(tmp_path / "lab.npz")), schema)
    objects = np.array([{"a": 1}, {"b": 2}], dtype=object)
    np.savez(tmp_path / "obj.npz", x=objects, y=np.array([0, 1]))
    with pytest.raises(DataError, match="unpickling"):
        load_site(SiteSource(path=str(tmp_path / "obj.npz")), schema)


def test_regression_labels(tmp_path: Path) -> None:
    f = _csv(tmp_path / "r.csv", ["1,2.5", "2,3.5", "3,x"], header="v,target")
    schema = parse_schema({"label": {"name": "target", "task": "regression"},
                           "numeric": [{"name": "v", "scale": "none"}]})
    with pytest.raises(DataError, match=r"line 4, column 'target': regression label 'x'"):
        load_site(SiteSource(path=str(f), test=str(f)), schema)


def test_schema_and_source_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"data.schema.label.*declared label set"):
        parse_schema({"label": {"name": "y"}})
    with pytest.raises(ConfigError, match=r"data.schema.numeric.0.*needs a finite fill"):
        parse_schema({"label": {"classes": [0, 1]},
                      "numeric": [{"name": "a", "missing": "constant"}]})
    with pytest.raises(ConfigError, match=r"duplicates"):
        parse_schema({"label": {"classes": [1, "1.0"]}})
    with pytest.raises(ConfigError, match=r"data.files.1.*unknown key"):
        parse_sources([{"path": "a.csv"}, {"path": "b.csv", "split": 0.3}])
    with pytest.raises(ConfigError, match="repeat"):
        parse_sources(["x/a.csv", "y/a.csv"])
    with pytest.raises(DataError, match="cannot tell the format"):
        SiteSource(path="a.parquet").resolved_format()
    with pytest.raises(DataError, match=r"site 'gone': .*gone.csv not found"):
        load_site(SiteSource(path="gone.csv"), parse_schema({"label": {"classes": [0, 1]}}))
