"""The public schema of a table to synthesise, and its discretisation.

Marginal-based DP synthesis works on a discrete domain. Every bin edge and category list
here comes from the *stated public schema* (ranges and categories a data owner can
publish), never from the private data: data-dependent edges would leak information that
no ledger accounts for. A value outside its public range is clipped into the end bins
(data-independent, so free); a category not in the public list is an error.

A *table* is a plain ``dict`` mapping column name to a 1-D NumPy array (numbers for
numeric columns, strings or numbers for categorical ones).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from veil.data.schema import canonical_value
from veil.errors import ConfigError, DataError

__all__ = [
    "CategoricalColumn",
    "Column",
    "NumericColumn",
    "Table",
    "TableSchema",
    "n_rows",
]

#: A table: column name -> 1-D array (all of one length).
Table = dict[str, np.ndarray]


@dataclass(frozen=True)
class NumericColumn:
    """A numeric column with a public range cut into ``bins`` equal-width bins.

    Attributes:
        name: column name.
        low, high: public range; values outside are clipped into the end bins.
        bins: number of bins (the synthesiser's resolution for this column).
        scale: ``"linear"`` (equal-width bins) or ``"log"`` (equal width in
            ``log(x - low + 1)``, for skewed quantities such as areas or incomes).
        integer: decoded values are rounded to integers.
    """

    name: str
    low: float
    high: float
    bins: int = 8
    scale: Literal["linear", "log"] = "linear"
    integer: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ConfigError(
                f"column {self.name!r}: needs finite low < high, got [{self.low}, {self.high}]",
                key="schema.columns",
            )
        if not 2 <= int(self.bins) <= 1000:
            raise ConfigError(
                f"column {self.name!r}: bins must be in [2, 1000], got {self.bins}",
                key="schema.columns",
            )
        if self.scale not in ("linear", "log"):
            raise ConfigError(
                f"column {self.name!r}: scale must be 'linear' or 'log', got {self.scale!r}",
                key="schema.columns",
            )

    @property
    def size(self) -> int:
        """Number of discrete values (bins)."""
        return int(self.bins)

    def _fwd(self, v: np.ndarray) -> np.ndarray:
        return np.log1p(v - self.low) if self.scale == "log" else v

    def _inv(self, t: np.ndarray) -> np.ndarray:
        return np.expm1(t) + self.low if self.scale == "log" else t

    def edges(self) -> np.ndarray:
        """The ``bins + 1`` bin edges in data units (from the public range only)."""
        lo, hi = self._fwd(np.array([self.low, self.high], dtype=np.float64))
        return self._inv(np.linspace(lo, hi, self.size + 1))

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each value (clipped into the public range).

        Raises:
            DataError: non-numeric or NaN values.
        """
        try:
            v = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"column {self.name!r}: values must be numeric") from None
        if np.isnan(v).any():
            raise DataError(f"column {self.name!r}: missing (NaN) values; impute them first")
        v = np.clip(v, self.low, self.high)
        lo, hi = self._fwd(np.array([self.low, self.high], dtype=np.float64))
        t = (self._fwd(v) - lo) / (hi - lo) * self.size
        return np.clip(np.floor(t), 0, self.size - 1).astype(np.int64)

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Values drawn uniformly inside each code's bin (post-processing, ML randomness)."""
        e = self._fwd(self.edges())
        c = np.asarray(codes, dtype=np.int64)
        t = e[c] + rng.random(len(c)) * (e[c + 1] - e[c])
        out = np.clip(self._inv(t), self.low, self.high)
        return np.round(out) if self.integer else out


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical column with a public list of categories.

    Attributes:
        name: column name.
        categories: every allowed value (strings or numbers), in a fixed order.
    """

    name: str
    categories: tuple[Any, ...]

    def __post_init__(self) -> None:
        cats = tuple(self.categories)
        object.__setattr__(self, "categories", cats)
        if len(cats) < 2 or len({canonical_value(c) for c in cats}) != len(cats):
            raise ConfigError(
                f"column {self.name!r}: needs at least two distinct categories",
                key="schema.columns",
            )

    @property
    def size(self) -> int:
        """Number of categories."""
        return len(self.categories)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Index of each value in :attr:`categories`, compared as
        :func:`veil.data.schema.canonical_value` compares them (``1``, ``"1.0"``, ``" 1"``
        are one category).

        Raises:
            DataError: a value that is not one of the public categories.
        """
        index = {canonical_value(c): i for i, c in enumerate(self.categories)}
        v = np.asarray(values)
        out = np.empty(len(v), dtype=np.int64)
        for i, x in enumerate(v.tolist()):
            key = canonical_value(x)
            if key not in index:
                raise DataError(
                    f"column {self.name!r}: value not among the schema's categories "
                    f"{list(self.categories)}; add it to the schema or recode the data"
                )
            out[i] = index[key]
        return out

    def decode(self, codes: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The category of each code."""
        return np.asarray(self.categories, dtype=object)[np.asarray(codes, dtype=np.int64)]


Column = NumericColumn | CategoricalColumn


def n_rows(table: Mapping[str, np.ndarray]) -> int:
    """Number of rows of ``table``.

    Raises:
        DataError: empty table or columns of different lengths.
    """
    lens = {len(np.asarray(v)) for v in table.values()}
    if len(lens) != 1:
        raise DataError(f"table columns must all have one length, got lengths {sorted(lens)}")
    return lens.pop()


@dataclass(frozen=True)
class TableSchema:
    """The public description of a table: its columns (in order) and the label, if any.

    Attributes:
        columns: the columns to synthesise.
        label: name of the label column (for utility evaluation), or ``None``.
    """

    columns: tuple[Column, ...]
    label: str | None = None

    def __post_init__(self) -> None:
        cols = tuple(self.columns)
        object.__setattr__(self, "columns", cols)
        names = [c.name for c in cols]
        if len(cols) < 2 or len(set(names)) != len(names):
            raise ConfigError("schema needs at least two uniquely named columns", key="schema")
        if self.label is not None and self.label not in names:
            raise ConfigError(f"label {self.label!r} is not a schema column", key="schema.label")

    @property
    def names(self) -> list[str]:
        """Column names in schema order."""
        return [c.name for c in self.columns]

    @property
    def sizes(self) -> dict[str, int]:
        """Column name -> number of discrete values."""
        return {c.name: c.size for c in self.columns}

    def column(self, name: str) -> Column:
        """The column called ``name``.

        Raises:
            ConfigError: no such column.
        """
        for c in self.columns:
            if c.name == name:
                return c
        raise ConfigError(f"no column {name!r} in the schema", key="schema.columns")

    def encode(self, table: Mapping[str, np.ndarray]) -> Table:
        """Discrete codes of every schema column of ``table`` (extra columns are ignored).

        Raises:
            DataError: a schema column is missing, lengths differ, or a value is invalid.
        """
        missing = [n for n in self.names if n not in table]
        if missing:
            raise DataError(f"table lacks schema columns {missing}")
        n_rows({n: table[n] for n in self.names})
        return {c.name: c.encode(np.asarray(table[c.name])) for c in self.columns}

    def decode(self, codes: Mapping[str, np.ndarray], rng: np.random.Generator) -> Table:
        """Values for discrete ``codes`` (numeric values drawn inside their bins)."""
        return {c.name: c.decode(np.asarray(codes[c.name]), rng) for c in self.columns}

    def features(self, table: Mapping[str, np.ndarray]) -> np.ndarray:
        """A numeric feature matrix for ML: numeric columns scaled to [0, 1] by the public
        range, categorical columns one-hot; the label column is left out."""
        parts = []
        for c in self.columns:
            if c.name == self.label:
                continue
            if isinstance(c, NumericColumn):
                v = np.clip(np.asarray(table[c.name], dtype=np.float64), c.low, c.high)
                lo, hi = c._fwd(np.array([c.low, c.high]))
                parts.append(((c._fwd(v) - lo) / (hi - lo))[:, None])
            else:
                parts.append(np.eye(c.size)[c.encode(np.asarray(table[c.name]))])
        return np.hstack(parts)

    def labels(self, table: Mapping[str, np.ndarray]) -> np.ndarray:
        """Label codes of ``table``.

        Raises:
            ConfigError: the schema has no label.
        """
        if self.label is None:
            raise ConfigError("the schema has no label column", key="schema.label")
        return self.column(self.label).encode(np.asarray(table[self.label]))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TableSchema:
        """From the TOML ``[schema]`` section: ``label`` and ``[[schema.columns]]`` tables
        with ``name``, ``type`` (``numeric`` | ``categorical``) and that type's fields.

        Raises:
            ConfigError: unknown or missing keys, wrong types.
        """
        cols: list[Column] = []
        raw = d.get("columns")
        if not isinstance(raw, Sequence) or not raw:
            raise ConfigError("needs a list of [[schema.columns]] tables", key="schema.columns")
        for i, c in enumerate(raw):
            key = f"schema.columns[{i}]"
            if not isinstance(c, Mapping) or "name" not in c:
                raise ConfigError("each column needs a name", key=key)
            kind = c.get("type", "numeric")
            allowed = {
                "numeric": {"name", "type", "low", "high", "bins", "scale", "integer"},
                "categorical": {"name", "type", "categories"},
            }.get(kind)
            if allowed is None:
                raise ConfigError(f"type must be numeric or categorical, got {kind!r}", key=key)
            extra = set(c) - allowed
            if extra:
                raise ConfigError(f"unknown keys {sorted(extra)} for a {kind} column", key=key)
            try:
                if kind == "numeric":
                    cols.append(
                        NumericColumn(
                            str(c["name"]), float(c["low"]), float(c["high"]),
                            int(c.get("bins", 8)), c.get("scale", "linear"),
                            bool(c.get("integer", False)),
                        )
                    )
                else:
                    cols.append(CategoricalColumn(str(c["name"]), tuple(c["categories"])))
            except KeyError as e:
                raise ConfigError(f"missing key {e.args[0]!r}", key=key) from None
            except (TypeError, ValueError) as e:
                raise ConfigError(f"bad value: {e}", key=key) from None
        extra = set(d) - {"columns", "label"}
        if extra:
            raise ConfigError(f"unknown keys {sorted(extra)}", key="schema")
        return cls(tuple(cols), d.get("label"))

    @classmethod
    def from_data_schema(cls, schema: Any, bins: int = 8) -> TableSchema:
        """The synthesis schema of a site-file :class:`veil.data.schema.Schema`.

        Numeric columns keep their declared public ``range`` (required: synthesis never
        derives bin edges from data) cut into ``bins``; categorical columns keep their
        categories; a classification label becomes a categorical column of its classes.

        Raises:
            ConfigError: a numeric column without a range, or a regression label.
        """
        cols: list[Column] = []
        for c in schema.numeric:
            if c.range is None:
                raise ConfigError(
                    f"column {c.name!r} needs a public range = [low, high] to be synthesised "
                    "(bin edges are never computed from the data)", key="data.schema.numeric")
            cols.append(NumericColumn(c.name, float(c.range[0]), float(c.range[1]), bins))
        cols += [CategoricalColumn(c.name, tuple(c.categories)) for c in schema.categorical]
        if schema.label.task != "classification":
            raise ConfigError("synthesis with a regression label is not supported; declare "
                              "the label as a numeric column instead", key="data.schema.label")
        cols.append(CategoricalColumn(schema.label.name, tuple(schema.label.classes)))
        return cls(tuple(cols), label=schema.label.name)

    def to_dict(self) -> dict[str, Any]:
        """Inverse of :meth:`from_dict` (JSON/TOML-friendly)."""
        cols: list[dict[str, Any]] = []
        for c in self.columns:
            if isinstance(c, NumericColumn):
                cols.append({"name": c.name, "type": "numeric", "low": c.low, "high": c.high,
                             "bins": c.bins, "scale": c.scale, "integer": c.integer})
            else:
                cols.append({"name": c.name, "type": "categorical",
                             "categories": list(c.categories)})
        out: dict[str, Any] = {"columns": cols}
        if self.label is not None:
            out["label"] = self.label
        return out
