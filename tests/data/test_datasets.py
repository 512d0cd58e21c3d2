from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from veil.data import load_csv, load_dataset, load_digits, load_fashion_mnist, partition, read_idx
from veil.errors import ConfigError, DataError


def _write_idx(path, arr: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(">u1").tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_bundled_sets_shapes() -> None:
    d = load_digits()
    assert d.x_train.shape[1:] == (64,) and d.n_classes == 10
    assert load_digits(image=True).input_shape == (1, 8, 8)
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    bc = load_dataset("breast_cancer")
    assert bc.n_classes == 2 and abs(float(bc.x_train.mean())) < 0.05
    db = load_dataset("diabetes")
    assert db.task == "regression" and db.y_train.dtype == np.float32


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("mnist3d")


def test_idx_roundtrip_and_fashion_layout(tmp_path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, size=(12, 28, 28))
    labels = rng.integers(0, 10, size=12)
    for stem, arr in [("train-images-idx3-ubyte", imgs), ("t10k-images-idx3-ubyte", imgs[:4])]:
        _write_idx(tmp_path / (stem + ".gz"), arr, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:4])
    np.testing.assert_array_equal(read_idx(tmp_path / "train-labels-idx1-ubyte"), labels)
    ds = load_fashion_mnist(tmp_path)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.y_test.shape == (4,)
    assert load_fashion_mnist(tmp_path, flat=True).x_train.shape == (12, 784)


def test_truncated_and_bad_idx(tmp_path) -> None:
    _write_idx(tmp_path / "a", np.zeros((5, 3, 3)))
    raw = (tmp_path / "a").read_bytes()
    (tmp_path / "b").write_bytes(raw[:-4])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"\x01\x02garbage")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "c")


def test_missing_fashion_mnist_says_how_to_install(tmp_path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    _write_idx(tmp_path / "half" / "train-images-idx3-ubyte", np.zeros((2, 28, 28)))
    with pytest.raises(DataError, match="incomplete"):
        load_fashion_mnist(tmp_path / "half")


def test_csv_loader_and_errors(tmp_path) -> None:
    p = tmp_path / "d.csv"
    rows = ["a,b,target"] + [f"{i},{i * 2 % 7},{'yes' if i % 3 else 'no'}" for i in range(30)]
    p.write_text("\n".join(rows))
    ds = load_csv(p, label="target")
    assert ds.n_classes == 2 and ds.x_train.shape[1] == 2
    with pytest.raises(DataError, match="label column 'y' not in header"):
        load_csv(p, label="y")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,target\n1,0\nx,1\n2,0\n")
    with pytest.raises(DataError, match=r"bad.csv:3: non-numeric"):
        load_csv(bad, label="target")
    short = tmp_path / "short.csv"
    short.write_text("a,target\n1,0\n1,2,3\n4,1\n")
    with pytest.raises(DataError, match="expected 2 fields"):
        load_csv(short, label="target")
    with pytest.raises(DataError, match="not found"):
        load_csv(tmp_path / "missing.csv", label="target")


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "quantity"])
def test_partition_is_a_seeded_partition(scheme: str) -> None:
    y = load_digits().y_train
    parts = partition(y, 10, scheme, alpha=0.5, seed=3)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(y) and len(np.unique(allidx)) == len(y)
    assert min(len(p) for p in parts) >= 2
    again = partition(y, 10, scheme, alpha=0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_dirichlet_skews_labels() -> None:
    y = load_digits().y_train
    def skew(parts):  # mean share of a site's most common label
        return np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in parts])
    assert skew(partition(y, 10, "dirichlet", alpha=0.1, seed=0)) > 0.5
    assert skew(partition(y, 10, "iid", seed=0)) < 0.25


def test_partition_rejects_impossible() -> None:
    y = np.zeros(10, dtype=np.int64)
    with pytest.raises(ConfigError, match="data.sites"):
        partition(y, 6, "iid")
    with pytest.raises(ConfigError, match="data.sites"):
        partition(y, 0, "iid")
    with pytest.raises(ConfigError, match="data.alpha"):
        partition(np.arange(100) % 3, 4, "dirichlet", alpha=0.0)


def test_csv_labels_1_and_1_0_are_one_class_and_a_single_example_class_loads(tmp_path) -> None:
    p = tmp_path / "l.csv"
    rows = [f"{i},{lab}" for i, lab in enumerate(["0", "1", "1.0", "0.0", " 1", "0"] * 3 + ["2"])]
    p.write_text("a,y\n" + "\n".join(rows) + "\n")
    ds = load_csv(p, label="y", test_fraction=0.25)
    assert ds.n_classes == 3  # 0, 1 and the single-example class 2 (not five classes)
    assert len(ds.y_train) + len(ds.y_test) == 19


def test_csv_error_names_column_and_value(tmp_path) -> None:
    p = tmp_path / "v.csv"
    p.write_text("a,b,y\n1,2,0\n3,oops,1\n4,5,1\n")
    with pytest.raises(DataError, match=r"v.csv:3: .*'oops' in column 'b'"):
        load_csv(p, label="y")
