"""IDX directories and NumPy ``.npz`` files as one site's data (features and labels).

Arrays are read without unpickling (``np.load(allow_pickle=False)``); labels are mapped to
the declared classes exactly as CSV labels are (``1`` and ``1.0`` are one class); features
are checked finite and inside a declared public range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from veil.data.datasets import read_idx
from veil.data.schema import Schema, canonical_value
from veil.errors import DataError

__all__ = ["read_arrays", "array_labels", "array_features"]


def _idx_pair(directory: Path, role: str) -> tuple[Path, Path]:
    files = sorted(p for p in directory.iterdir() if "idx" in p.name)
    images = [p for p in files if "images" in p.name]
    labels = [p for p in files if "labels" in p.name]
    if len(images) > 1 or len(labels) > 1:
        prefixes = ("train",) if role == "train" else ("t10k", "test")
        images = [p for p in images if p.name.startswith(prefixes)]
        labels = [p for p in labels if p.name.startswith(prefixes)]
    if len(images) != 1 or len(labels) != 1:
        raise DataError(
            f"{directory}: expected one IDX images file and one labels file for {role} "
            f"(names containing 'images' / 'labels'), found {[p.name for p in files]}"
        )
    return images[0], labels[0]


def read_arrays(path: Path, fmt: str, role: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Features, labels and the file they came from (``fmt`` ``"idx"`` or ``"npz"``; ``role``
    ``"train"`` or ``"test"`` picks ``train-*`` or ``t10k-*`` files in an IDX directory).

    Raises:
        DataError: missing, unreadable or pickled data.
    """
    if fmt == "idx":
        if not path.is_dir():
            raise DataError(f"IDX site data must be a directory, {path} is not one")
        ip, lp = _idx_pair(path, role)
        x, y = read_idx(ip), read_idx(lp)
        if x.ndim == 3:
            x = x[:, None, :, :]
        return x, y, str(ip)
    if not path.is_file():
        raise DataError(f"NumPy file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            kx, ky = ("x", "y") if {"x", "y"} <= keys else ("x_train", "y_train")
            if not {kx, ky} <= keys:
                raise DataError(f"{path}: needs arrays 'x' and 'y', has {sorted(keys)}")
            return z[kx], z[ky], str(path)
    except DataError:
        raise
    except ValueError as e:  # object arrays need pickle, which is refused
        raise DataError(
            f"{path}: cannot read without unpickling ({e}); store numeric arrays"
        ) from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable .npz file: {e}") from None


def array_labels(y: np.ndarray, schema: Schema, where: str) -> np.ndarray:
    """Labels as declared class ids (int64) or finite float32 targets.

    Raises:
        DataError: a label outside the declared classes, or not finite (naming the example).
    """
    if y.ndim != 1:
        y = y.reshape(len(y), -1)
        if y.shape[1] != 1:
            raise DataError(f"{where}: labels must be one value per example, got shape {y.shape}")
        y = y[:, 0]
    lab = schema.label
    if lab.task == "regression":
        yf = y.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(yf))
        if bad.size:
            raise DataError(f"{where}: example {bad[0]}: label {y[bad[0]]!r} is not finite")
        return yf.astype(np.float32)
    classes = lab.classes or ()
    lookup = {c: i for i, c in enumerate(classes)}
    values, inverse = np.unique(y, return_inverse=True)
    ids = np.empty(len(values), dtype=np.int64)
    for k, v in enumerate(values):
        raw = v.item() if hasattr(v, "item") else v
        c = canonical_value(raw)
        if c not in lookup:
            first = int(np.flatnonzero(inverse.reshape(-1) == k)[0])
            raise DataError(
                f"{where}: example {first}: label {raw!r} is not in the declared classes "
                f"{list(classes)}"
            )
        ids[k] = lookup[c]
    return ids[inverse.reshape(-1)]


def array_features(x: np.ndarray, schema: Schema, where: str) -> np.ndarray:
    """Features as float32, scaled from the declared public range if one is declared.

    Raises:
        DataError: non-numeric, non-finite or out-of-range values (naming example, feature).
    """
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{where}: features must be numeric, got dtype {x.dtype}")
    xf = x.astype(np.float64)
    flat = xf.reshape(len(xf), -1)
    bad = np.argwhere(~np.isfinite(flat))
    if bad.size:
        i, j = bad[0]
        raise DataError(
            f"{where}: example {i}, feature {j}: value {float(flat[i, j])} is not finite"
        )
    a = schema.array
    if a.range is not None:
        lo, hi = a.range
        out = np.argwhere((flat < lo) | (flat > hi))
        if out.size:
            i, j = out[0]
            raise DataError(
                f"{where}: example {i}, feature {j}: value {flat[i, j]:g} is outside the declared "
                f"range {list(a.range)}"
            )
        if a.scaling == "range":
            xf = (xf - lo) / (hi - lo)
    if a.flat:
        xf = xf.reshape(len(xf), -1)
    return xf.astype(np.float32)
