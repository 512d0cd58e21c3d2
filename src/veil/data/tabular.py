"""One site's CSV file read against a declared :class:`~veil.data.schema.Schema`.

Reading happens in two steps. :func:`read_table` parses and validates every row (numbers,
declared categories, declared labels, declared ranges, missing values where they are not
allowed) and names the file, line, column and value of the first problem.
:class:`SitePreprocessor` is then fitted on *that site's training rows only* (scikit-learn's
SimpleImputer, MissingIndicator, StandardScaler, OneHotEncoder, OrdinalEncoder) and
applied to the site's training and test rows. Nothing here ever sees two sites' data.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from veil.data.schema import (
    MISSING_TOKENS,
    CategoricalColumn,
    NumericColumn,
    Schema,
    canonical_value,
)
from veil.errors import DataError

__all__ = ["Table", "read_table", "SitePreprocessor"]


@dataclass(frozen=True)
class Table:
    """A parsed, validated CSV file (not yet imputed, scaled or encoded).

    Attributes:
        path: the file.
        lines: the file line number of each row (the header is line 1).
        numeric: ``(n, n_numeric)`` float64, NaN where the value is missing.
        categorical: ``(n, n_categorical)`` object array of canonical values, ``None`` where
            missing.
        y: int64 class ids (position in the declared classes) or float32 targets.
    """

    path: Path
    lines: np.ndarray
    numeric: np.ndarray
    categorical: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def _is_missing(text: str) -> bool:
    return text.strip().lower() in MISSING_TOKENS


def _where(path: Path, line: int, column: str) -> str:
    return f"{path}, line {line}, column {column!r}"


def _parse_number(text: str, path: Path, line: int, col: NumericColumn) -> float:
    if _is_missing(text):
        if col.missing == "error":
            raise DataError(
                f"{_where(path, line, col.name)}: value is missing ({text!r}); fix the file or "
                "declare missing = 'mean' | 'median' | 'constant' for this column"
            )
        return math.nan
    try:
        v = float(text)
    except ValueError:
        raise DataError(
            f"{_where(path, line, col.name)}: {text!r} is not a number (declare the column as "
            "categorical, or fix the value)"
        ) from None
    if not math.isfinite(v):
        raise DataError(f"{_where(path, line, col.name)}: {text!r} is not a finite number")
    if col.range is not None and col.outside == "error" and not col.range[0] <= v <= col.range[1]:
        raise DataError(
            f"{_where(path, line, col.name)}: {text!r} is outside the declared range "
            f"{list(col.range)} (fix the value, widen the range, or set outside = 'clip')"
        )
    return v


def _parse_category(text: str, path: Path, line: int, col: CategoricalColumn) -> str | None:
    if _is_missing(text):
        if col.missing == "error":
            raise DataError(
                f"{_where(path, line, col.name)}: value is missing ({text!r}); fix the file or "
                "declare missing = 'most_frequent' | 'constant' for this column"
            )
        return None
    v = canonical_value(text)
    if v not in col.categories and col.unknown == "error":
        raise DataError(
            f"{_where(path, line, col.name)}: {text!r} is not one of the declared categories "
            f"{list(col.categories)} (add it to the schema, or set unknown = 'ignore')"
        )
    return v


def _parse_label(text: str, path: Path, line: int, schema: Schema) -> float | int:
    lab = schema.label
    if _is_missing(text):
        raise DataError(f"{_where(path, line, lab.name)}: the label is missing ({text!r})")
    if lab.task == "regression":
        try:
            v = float(text)
        except ValueError:
            raise DataError(
                f"{_where(path, line, lab.name)}: regression label {text!r} is not a number"
            ) from None
        if not math.isfinite(v):
            raise DataError(f"{_where(path, line, lab.name)}: label {text!r} is not finite")
        return v
    classes = lab.classes or ()  # never empty for classification (Label's validator)
    try:
        return classes.index(canonical_value(text))
    except ValueError:
        raise DataError(
            f"{_where(path, line, lab.name)}: label {text!r} is not in the declared classes "
            f"{list(classes)} (declare it in label.classes, or fix the value)"
        ) from None


def read_table(path: str | os.PathLike[str], schema: Schema) -> Table:
    """Parse and validate one CSV file against the schema.

    Raises:
        DataError: missing/unreadable file, header without a declared column or with an
            undeclared one, a row with the wrong number of fields, or a bad value (the
            message names file, line, column and value).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"CSV file not found: {p}")
    try:
        f = open(p, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"cannot read CSV {p}: {e.strerror}") from None
    num_cols, cat_cols = schema.numeric, schema.categorical
    lines: list[int] = []
    nums: list[list[float]] = []
    cats: list[list[str | None]] = []
    ys: list[float | int] = []
    with f:
        reader = csv.reader(f, delimiter=schema.delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{p} is empty; it needs a header row naming the columns") from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"cannot read CSV {p}: {e}") from None
        declared = {schema.label.name, *(c.name for c in schema.columns), *schema.ignore}
        missing = [n for n in declared - set(schema.ignore) if n not in header]
        if missing:
            raise DataError(f"{p}: declared column(s) {sorted(missing)} not in the header {header}")
        extra = [h for h in header if h not in declared]
        if extra:
            raise DataError(
                f"{p}: column(s) {extra} are not in the schema; declare them, or list them in "
                "schema.ignore to leave them out"
            )
        if len(set(header)) != len(header):
            raise DataError(f"{p}: the header names a column twice: {header}")
        idx = {h: i for i, h in enumerate(header)}
        li = idx[schema.label.name]
        try:
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                ln = reader.line_num
                if len(row) != len(header):
                    raise DataError(
                        f"{p}, line {ln}: expected {len(header)} fields, got {len(row)}"
                    )
                nums.append([_parse_number(row[idx[c.name]], p, ln, c) for c in num_cols])
                cats.append([_parse_category(row[idx[c.name]], p, ln, c) for c in cat_cols])
                ys.append(_parse_label(row[li], p, ln, schema))
                lines.append(ln)
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"cannot read CSV {p} after line {reader.line_num}: {e}") from None
    if not ys:
        raise DataError(f"{p} has a header but no data rows")
    y = np.asarray(ys, dtype=np.int64 if schema.label.task == "classification" else np.float32)
    return Table(
        p,
        np.asarray(lines, dtype=np.int64),
        np.asarray(nums, dtype=np.float64).reshape(len(ys), len(num_cols)),
        np.asarray(cats, dtype=object).reshape(len(ys), len(cat_cols)),
        y,
    )


class SitePreprocessor:
    """Imputation, scaling and encoding fitted on one site's own training rows.

    Declared things (category lists, public ranges, constant fills) are the same at every
    site; fitted things (means, medians, modes, per-site standardisation) come from this
    site's training rows and stay with the site.

    Args:
        schema: the shared schema.
        site: the site's name (for error messages).
    """

    def __init__(self, schema: Schema, site: str) -> None:
        self.schema = schema
        self.site = site
        self._num: list[dict[str, Any]] = []
        self._cat: list[Any] = []
        self._fitted = False

    def __repr__(self) -> str:
        return f"SitePreprocessor(site={self.site!r}, fitted={self._fitted})"

    def fit(self, table: Table, rows: np.ndarray) -> SitePreprocessor:
        """Fit on ``table``'s rows ``rows`` (the site's training rows).

        Raises:
            DataError: a column to impute from the site's own values has none in its
                training rows.
        """
        from sklearn.impute import MissingIndicator, SimpleImputer
        from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

        self._num = []
        for j, col in enumerate(self.schema.numeric):
            x = table.numeric[rows, j : j + 1]
            step: dict[str, Any] = {}
            if col.missing in ("mean", "median"):
                if np.isnan(x).all():
                    raise DataError(
                        f"site {self.site!r} ({table.path}): column {col.name!r} has no values in "
                        f"its training rows to compute the {col.missing} from; use missing = "
                        "'constant' with a fill value"
                    )
                step["impute"] = SimpleImputer(strategy=col.missing).fit(x)
            elif col.missing == "constant":
                step["impute"] = SimpleImputer(strategy="constant", fill_value=col.fill).fit(x)
            if col.indicator:
                step["indicator"] = MissingIndicator(features="all").fit(x)
            filled = step["impute"].transform(x) if "impute" in step else x
            if col.scaling == "site":
                step["scaler"] = StandardScaler().fit(filled)
            self._num.append(step)
        self._cat = []
        for j, kc in enumerate(self.schema.categorical):
            x = table.categorical[rows, j : j + 1]
            imp = None
            if kc.missing == "most_frequent":
                if all(v is None for v in x[:, 0]):
                    raise DataError(
                        f"site {self.site!r} ({table.path}): column {kc.name!r} has no values in "
                        "its training rows to take the most frequent from; use missing = "
                        "'constant' with a fill category"
                    )
                imp = SimpleImputer(strategy="most_frequent", missing_values=None).fit(x)
            elif kc.missing == "constant":
                imp = SimpleImputer(strategy="constant", fill_value=kc.fill, missing_values=None)
                imp.fit(x)
            cats = [list(kc.categories)]
            enc: Any
            if kc.encoding == "onehot":
                enc = OneHotEncoder(categories=cats, handle_unknown=kc.unknown, sparse_output=False)
            else:
                enc = OrdinalEncoder(categories=cats)
            enc.fit(np.asarray([[kc.categories[0]]], dtype=object))  # categories are declared
            self._cat.append((imp, enc))
        self._fitted = True
        return self

    def transform(self, table: Table, rows: np.ndarray | None = None) -> np.ndarray:
        """Encoded float32 features of ``table``'s rows (all rows if ``rows`` is None).

        Raises:
            veil.errors.LocalError: called before :meth:`fit`.
        """
        from veil.errors import LocalError

        if not self._fitted:
            raise LocalError("SitePreprocessor.transform called before fit")
        sel = np.arange(len(table)) if rows is None else rows
        blocks: list[np.ndarray] = []
        indicators: list[np.ndarray] = []
        for j, (col, step) in enumerate(zip(self.schema.numeric, self._num)):
            x = table.numeric[sel, j : j + 1]
            if "indicator" in step:
                indicators.append(step["indicator"].transform(x).astype(np.float64))
            if "impute" in step:
                x = step["impute"].transform(x)
            if col.range is not None:
                x = np.clip(x, col.range[0], col.range[1])
            if col.scaling == "range":
                lo, hi = col.range  # type: ignore[misc]
                x = (x - lo) / (hi - lo)
            elif col.scaling == "site":
                x = step["scaler"].transform(x)
            blocks.append(x)
        blocks.extend(indicators)
        for j, (kc, (imp, enc)) in enumerate(zip(self.schema.categorical, self._cat)):
            x = table.categorical[sel, j : j + 1]
            if imp is not None:
                x = imp.transform(x).astype(object)
            if kc.encoding == "onehot":
                blocks.append(np.asarray(enc.transform(x), dtype=np.float64))
            else:
                blocks.append(enc.transform(x) / max(len(kc.categories) - 1, 1))
        if not blocks:
            return np.zeros((len(sel), 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def describe(self) -> dict[str, str]:
        """What each column's preprocessing is, and whether it was fitted at the site.

        Fitted statistics themselves (means, modes) are not included: they describe the
        site's private data.
        """
        out: dict[str, str] = {}
        for col in self.schema.numeric:
            parts = {"range": f"public range {list(col.range or ())} -> [0, 1]",
                     "site": "standardised with this site's own training mean/std",
                     "none": "raw"}[col.scaling]
            if col.missing in ("mean", "median"):
                parts += f"; missing -> this site's training {col.missing}"
            elif col.missing == "constant":
                parts += f"; missing -> {col.fill}"
            if col.indicator:
                parts += "; missing indicator column"
            out[col.name] = parts
        for kc in self.schema.categorical:
            parts = f"{kc.encoding} over declared categories {list(kc.categories)}"
            if kc.missing == "most_frequent":
                parts += "; missing -> this site's most frequent training category"
            elif kc.missing == "constant":
                parts += f"; missing -> {kc.fill!r}"
            out[kc.name] = parts
        return out
