"""Data sets: bundled scikit-learn sets, Fashion-MNIST from IDX files, a user's CSV.

Nothing here downloads anything. A missing file raises :class:`veil.errors.DataError`
saying how to obtain it.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from veil.data.schema import canonical_value
from veil.errors import DataError

__all__ = [
    "Dataset",
    "load_dataset",
    "load_digits",
    "load_breast_cancer",
    "load_diabetes",
    "load_fashion_mnist",
    "load_csv",
    "read_idx",
    "FASHION_MNIST_DIRS",
    "DATASETS",
]

#: Where Debian's ``dataset-fashion-mnist`` package puts the IDX files (first match wins).
FASHION_MNIST_DIRS = (
    "/usr/share/datasets/fashion-mnist",  # bookworm's package (`dpkg -L dataset-fashion-mnist`)
    "/usr/share/dataset-fashion-mnist",
    "/usr/share/fashion-mnist",
)


@dataclass(frozen=True)
class Dataset:
    """A supervised data set split into train and test parts.

    Attributes:
        name: short name.
        x_train, y_train, x_test, y_test: float32 features (images keep their
            ``(C, H, W)`` shape) and labels (int64 class ids, or float32 targets for
            regression).
        task: ``"classification"`` or ``"regression"``.
        n_classes: number of classes (1 for regression).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str = "classification"
    n_classes: int = 2

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example's features."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"input_shape={self.input_shape}, task={self.task}, n_classes={self.n_classes})"
        )


def _split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y if stratify else None
    )
    return xtr, xte, ytr, yte


def _standardise(xtr: np.ndarray, xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = xtr.mean(axis=0)
    sd = xtr.std(axis=0)
    sd[sd == 0] = 1.0
    return ((xtr - mu) / sd).astype(np.float32), ((xte - mu) / sd).astype(np.float32)


def load_digits(test_fraction: float = 0.2, seed: int = 0, image: bool = False) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), pixels scaled to [0, 1].

    Args:
        test_fraction: share held out for testing (stratified).
        seed: split seed.
        image: keep ``(1, 8, 8)`` image shape (for CNNs) instead of 64 flat features.
    """
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = _split(x, y, test_fraction, seed, True)
    if image:
        xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    return Dataset("digits", xtr, ytr, xte, yte, "classification", 10)


def load_breast_cancer(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's breast cancer set (569 rows, 30 features, 2 classes), standardised."""
    from sklearn.datasets import load_breast_cancer as _lb

    d = _lb()
    xtr, xte, ytr, yte = _split(d.data, d.target.astype(np.int64), test_fraction, seed, True)
    xtr, xte = _standardise(xtr, xte)
    return Dataset("breast_cancer", xtr, ytr, xte, yte, "classification", 2)


def load_diabetes(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's diabetes regression set (442 rows, 10 features), target standardised."""
    from sklearn.datasets import load_diabetes as _ld

    d = _ld()
    xtr, xte, ytr, yte = _split(d.data, d.target, test_fraction, seed, False)
    xtr, xte = _standardise(xtr, xte)
    mu, sd = ytr.mean(), ytr.std()
    return Dataset(
        "diabetes",
        xtr,
        ((ytr - mu) / sd).astype(np.float32),
        xte,
        ((yte - mu) / sd).astype(np.float32),
        "regression",
        1,
    )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Raises:
        DataError: if the file is missing, truncated or not an IDX file.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"IDX file not found: {p}")
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read IDX file {p}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{p} is not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = raw[2], raw[3]
    if code not in dtypes:
        raise DataError(f"{p}: unknown IDX element type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{p}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    dt = np.dtype(dtypes[code])
    need = int(np.prod(dims)) * dt.itemsize
    if len(raw) - header != need:
        raise DataError(
            f"{p}: IDX body has {len(raw) - header} bytes, header says {need} "
            "(file truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=dt, offset=header).reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (directory / name).exists():
            return directory / name
    raise DataError(f"{stem} not found in {directory}")


def load_fashion_mnist(path: str | os.PathLike[str] | None = None, flat: bool = False) -> Dataset:
    """Fashion-MNIST (60k train / 10k test 28x28 greyscale images, 10 classes).

    Args:
        path: directory holding the four IDX files. Default: the location Debian's
            ``dataset-fashion-mnist`` package installs to.
        flat: return 784 flat features instead of ``(1, 28, 28)`` images.

    Raises:
        DataError: if the files are missing (the message says how to install them) or corrupt.
    """
    candidates = [Path(path)] if path is not None else [Path(d) for d in FASHION_MNIST_DIRS]
    directory = next((c for c in candidates if c.is_dir()), None)
    if directory is None:
        raise DataError(
            "Fashion-MNIST not found in "
            + ", ".join(str(c) for c in candidates)
            + ". Install it with `sudo apt-get install dataset-fashion-mnist` (or `make data`), "
            "or pass the directory holding train-images-idx3-ubyte etc."
        )
    try:
        xtr = read_idx(_find_idx(directory, "train-images-idx3-ubyte"))
        ytr = read_idx(_find_idx(directory, "train-labels-idx1-ubyte"))
        xte = read_idx(_find_idx(directory, "t10k-images-idx3-ubyte"))
        yte = read_idx(_find_idx(directory, "t10k-labels-idx1-ubyte"))
    except DataError as e:
        raise DataError(f"Fashion-MNIST in {directory} is incomplete: {e}") from None
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"Fashion-MNIST in {directory}: image and label counts differ")
    shape = (-1, 784) if flat else (-1, 1, 28, 28)
    return Dataset(
        "fashion_mnist",
        (xtr.astype(np.float32) / 255.0).reshape(shape),
        ytr.astype(np.int64),
        (xte.astype(np.float32) / 255.0).reshape(shape),
        yte.astype(np.int64),
        "classification",
        10,
    )


def load_csv(
    path: str | os.PathLike[str],
    label: str,
    task: str = "classification",
    test_fraction: float = 0.2,
    seed: int = 0,
    standardise: bool = True,
) -> Dataset:
    """A user's CSV file with a header row and a named label column; other columns numeric.

    Raises:
        DataError: missing file, missing label column, non-numeric values, too few rows.
    """
    import csv

    p = Path(path)
    if not p.exists():
        raise DataError(f"CSV file not found: {p}")
    try:
        with open(p, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read CSV {p}: {e}") from None
    if len(rows) < 3:
        raise DataError(f"{p}: needs a header row and at least two data rows")
    header = [h.strip() for h in rows[0]]
    if label not in header:
        raise DataError(f"{p}: label column {label!r} not in header {header}")
    li = header.index(label)
    feats, labels = [], []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{p}:{n}: expected {len(header)} fields, got {len(row)}")
        vals = []
        for i, v in enumerate(row):
            if i == li:
                continue
            try:
                vals.append(float(v))
            except ValueError:
                raise DataError(
                    f"{p}:{n}: non-numeric feature value {v!r} in column {header[i]!r} (for "
                    "categorical or missing values declare a schema: docs/own-data.md)"
                ) from None
        feats.append(vals)
        labels.append(canonical_value(row[li]))
    x = np.asarray(feats, dtype=np.float64)
    if not np.isfinite(x).all():
        raise DataError(f"{p}: features contain NaN or inf")
    if task == "classification":
        classes = sorted(set(labels), key=_label_order)  # "1" and "1.0" are one class
        if len(classes) < 2:
            raise DataError(f"{p}: label column {label!r} has fewer than two classes")
        y = np.asarray([classes.index(v) for v in labels], dtype=np.int64)
        n_classes = len(classes)
    elif task == "regression":
        try:
            y = np.asarray([float(v) for v in labels], dtype=np.float32)
        except ValueError:
            raise DataError(f"{p}: regression label {label!r} has non-numeric values") from None
        n_classes = 1
    else:
        raise DataError(f"task must be 'classification' or 'regression', got {task!r}")
    stratify = task == "classification" and int(np.bincount(y).min()) >= 2
    xtr, xte, ytr, yte = _split(x, y, test_fraction, seed, stratify)
    if standardise:
        xtr, xte = _standardise(xtr, xte)
    return Dataset(
        p.stem, xtr.astype(np.float32), ytr, xte.astype(np.float32), yte, task, n_classes
    )


def _label_order(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


DATASETS = ("digits", "breast_cancer", "diabetes", "fashion_mnist", "csv")


def load_dataset(name: str, **kwargs: object) -> Dataset:
    """Load a data set by name (``digits``, ``breast_cancer``, ``diabetes``,
    ``fashion_mnist``, ``csv``); keyword arguments go to the loader.

    Raises:
        DataError: unknown name, or the loader's errors.
    """
    loaders = {
        "digits": load_digits,
        "breast_cancer": load_breast_cancer,
        "diabetes": load_diabetes,
        "fashion_mnist": load_fashion_mnist,
        "csv": load_csv,
    }
    if name not in loaders:
        raise DataError(f"unknown data set {name!r}; choose one of {sorted(loaders)}")
    return loaders[name](**kwargs)  # type: ignore[operator]
