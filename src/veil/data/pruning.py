"""Sensitivity tiers of a table's columns, and pruning with its accuracy cost.

A *data description* gives each column a role:

* ``identifier`` — names, record numbers, e-mail addresses: always dropped;
* ``quasi_identifier`` — age, postcode, sex, dates: columns that single a person out in
  combination; each is *generalised* by a declared rule (numeric bins of a public width,
  a kept prefix, a mapping of values to coarser groups) or, without a rule, dropped;
* ``sensitive`` — the values to protect most (a diagnosis, an income): kept, and handed to
  the privacy layers that can give them a stricter guarantee (see docs/synthetic-data.md:
  only DP synthesis's per-column accounting supports that today);
* ``ordinary`` — everything else (the default for undescribed columns, which the report
  lists so that nothing passes unseen).

:func:`apply_description` does what the description says and reports every column's fate;
:func:`pruning_costs` measures, on the data owner's own train/test rows, what each dropped
or generalised column cost in accuracy.

Pruning is *not* a privacy guarantee: dropping identifiers and coarsening
quasi-identifiers lowers re-identification risk in what is released, but only DP bounds what
a model or synthetic table reveals about a record.

TOML (``[description]``)::

    identifiers = ["patient_id", "name"]
    sensitive = ["diagnosis"]
    [description.quasi_identifiers]
    age = { width = 10 }                 # numeric: floor to multiples of 10
    postcode = { keep_prefix = 3 }       # text: keep the first 3 characters
    region = { map = { "north-east" = "north", "north-west" = "north" } }
    birth_date = {}                      # no rule: dropped
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from veil.errors import ConfigError, DataError

__all__ = [
    "ColumnRole",
    "DataDescription",
    "Generalisation",
    "PruningReport",
    "apply_description",
    "pruning_costs",
]


class ColumnRole(str, Enum):
    """A column's sensitivity tier."""

    IDENTIFIER = "identifier"
    QUASI_IDENTIFIER = "quasi_identifier"
    SENSITIVE = "sensitive"
    ORDINARY = "ordinary"


@dataclass(frozen=True)
class Generalisation:
    """How a quasi-identifier is coarsened (exactly one of the fields is set).

    Attributes:
        width: numeric values floored to multiples of ``width`` (a public bin width).
        keep_prefix: text values cut to their first ``keep_prefix`` characters.
        mapping: value -> coarser group (values not listed are kept).
    """

    width: float | None = None
    keep_prefix: int | None = None
    mapping: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        set_ = [f for f in (self.width, self.keep_prefix, self.mapping) if f is not None]
        if len(set_) != 1:
            raise ConfigError("a generalisation sets exactly one of width, keep_prefix, map",
                              key="description.quasi_identifiers")
        if self.width is not None and not self.width > 0:
            raise ConfigError("width must be > 0", key="description.quasi_identifiers")
        if self.keep_prefix is not None and self.keep_prefix < 1:
            raise ConfigError("keep_prefix must be >= 1", key="description.quasi_identifiers")

    def apply(self, values: np.ndarray, name: str) -> np.ndarray:
        """The generalised column.

        Raises:
            DataError: ``width`` on a non-numeric column.
        """
        if self.width is not None:
            try:
                v = np.asarray(values, dtype=np.float64)
            except ValueError:
                raise DataError(f"column {name!r}: width needs numeric values") from None
            return np.floor(v / self.width) * self.width
        if self.keep_prefix is not None:
            return np.array([str(x)[: self.keep_prefix] for x in values], dtype=object)
        m = dict(self.mapping or {})
        return np.array([m.get(str(x), str(x)) for x in values], dtype=object)

    def describe(self) -> str:
        """One line for reports."""
        if self.width is not None:
            return f"floored to multiples of {self.width:g}"
        if self.keep_prefix is not None:
            return f"first {self.keep_prefix} characters kept"
        return f"{len(self.mapping or {})} values mapped to coarser groups"


@dataclass(frozen=True)
class DataDescription:
    """Roles of a table's columns (undescribed columns are ordinary).

    Attributes:
        roles: column -> role.
        rules: quasi-identifier -> its generalisation (absent: the column is dropped).
    """

    roles: Mapping[str, ColumnRole] = field(default_factory=dict)
    rules: Mapping[str, Generalisation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for c in self.rules:
            if self.roles.get(c) != ColumnRole.QUASI_IDENTIFIER:
                raise ConfigError(f"{c!r} has a generalisation but is not a quasi-identifier",
                                  key="description.quasi_identifiers")

    def role(self, column: str) -> ColumnRole:
        """The role of ``column`` (ordinary when undescribed)."""
        return self.roles.get(column, ColumnRole.ORDINARY)

    @property
    def sensitive(self) -> list[str]:
        """Columns marked sensitive (e.g. for ``SynthSettings.sensitive``)."""
        return [c for c, r in self.roles.items() if r == ColumnRole.SENSITIVE]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataDescription:
        """From a TOML ``[description]`` table (see the module docstring).

        Raises:
            ConfigError: unknown keys, a column given two roles, a bad rule.
        """
        allowed = {"identifiers", "quasi_identifiers", "sensitive", "ordinary"}
        extra = set(d) - allowed
        if extra:
            raise ConfigError(f"unknown keys {sorted(extra)}; allowed: {sorted(allowed)}",
                              key="description")
        roles: dict[str, ColumnRole] = {}
        rules: dict[str, Generalisation] = {}

        def put(col: str, role: ColumnRole) -> None:
            if col in roles:
                raise ConfigError(f"column {col!r} has two roles ({roles[col].value}, "
                                  f"{role.value})", key="description")
            roles[col] = role

        for key, role in (("identifiers", ColumnRole.IDENTIFIER),
                          ("sensitive", ColumnRole.SENSITIVE),
                          ("ordinary", ColumnRole.ORDINARY)):
            cols = d.get(key, [])
            if not isinstance(cols, Sequence) or isinstance(cols, str):
                raise ConfigError("must be a list of column names", key=f"description.{key}")
            for c in cols:
                put(str(c), role)
        qi = d.get("quasi_identifiers", {})
        if not isinstance(qi, Mapping):
            raise ConfigError("must be a table: column = { rule }",
                              key="description.quasi_identifiers")
        for c, rule in qi.items():
            put(str(c), ColumnRole.QUASI_IDENTIFIER)
            rule = dict(rule or {})
            bad = set(rule) - {"width", "keep_prefix", "map"}
            if bad:
                raise ConfigError(f"unknown rule keys {sorted(bad)} for {c!r}",
                                  key="description.quasi_identifiers")
            if rule:
                rules[str(c)] = Generalisation(
                    width=float(rule["width"]) if "width" in rule else None,
                    keep_prefix=int(rule["keep_prefix"]) if "keep_prefix" in rule else None,
                    mapping={str(k): str(v) for k, v in rule["map"].items()}
                    if "map" in rule else None,
                )
        return cls(roles, rules)


@dataclass
class PruningReport:
    """What :func:`apply_description` did, and (after :func:`pruning_costs`) what it cost.

    Attributes:
        dropped: column -> reason (``"identifier"``, ``"quasi-identifier without a rule"``).
        generalised: column -> the rule applied.
        kept: columns passed on unchanged, with their role.
        undescribed: columns that had no role (treated as ordinary).
        costs: column -> accuracy lost by dropping / generalising it (filled by
            :func:`pruning_costs`).
        accuracy_before, accuracy_after: test accuracy on all columns / after pruning.
    """

    dropped: dict[str, str] = field(default_factory=dict)
    generalised: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)
    undescribed: list[str] = field(default_factory=list)
    costs: dict[str, float] = field(default_factory=dict)
    accuracy_before: float | None = None
    accuracy_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dict(self.__dict__)


def apply_description(table: Mapping[str, np.ndarray], desc: DataDescription,
                      keep: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], PruningReport]:
    """Drop identifiers, generalise or drop quasi-identifiers, keep the rest.

    Args:
        table: column -> values.
        desc: the data description.
        keep: columns never touched (e.g. the label).

    Raises:
        ConfigError: the description names a column the table lacks.
    """
    missing = [c for c in desc.roles if c not in table]
    if missing:
        raise ConfigError(f"the description names columns the table lacks: {missing}",
                          key="description")
    out: dict[str, np.ndarray] = {}
    rep = PruningReport()
    for c, v in table.items():
        role = desc.role(c)
        if c not in desc.roles:
            rep.undescribed.append(c)
        if c in keep:
            out[c] = np.asarray(v)
            rep.kept[c] = role.value
        elif role == ColumnRole.IDENTIFIER:
            rep.dropped[c] = "identifier"
        elif role == ColumnRole.QUASI_IDENTIFIER and c not in desc.rules:
            rep.dropped[c] = "quasi-identifier without a rule"
        elif role == ColumnRole.QUASI_IDENTIFIER:
            out[c] = desc.rules[c].apply(np.asarray(v), c)
            rep.generalised[c] = desc.rules[c].describe()
        else:
            out[c] = np.asarray(v)
            rep.kept[c] = role.value
    return out, rep


def _matrix(train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray],
            cols: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Numeric columns standardised, others one-hot; fitted on ``train`` rows only."""
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts_tr, parts_te = [], []
    for c in cols:
        try:
            a = np.asarray(train[c], dtype=np.float64)[:, None]
            b = np.asarray(test[c], dtype=np.float64)[:, None]
            sc = StandardScaler().fit(a)
            parts_tr.append(sc.transform(a))
            parts_te.append(sc.transform(b))
        except ValueError:
            enc = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
            a = np.asarray(train[c]).astype(str)[:, None]
            parts_tr.append(enc.fit_transform(a))
            parts_te.append(enc.transform(np.asarray(test[c]).astype(str)[:, None]))
    if not parts_tr:
        n, m = len(next(iter(train.values()))), len(next(iter(test.values())))
        return np.zeros((n, 1)), np.zeros((m, 1))
    return np.hstack(parts_tr), np.hstack(parts_te)


def _accuracy(train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray],
              cols: Sequence[str], label: str) -> float:
    from sklearn.linear_model import LogisticRegression

    xtr, xte = _matrix(train, test, cols)
    clf = LogisticRegression(max_iter=2000).fit(xtr, np.asarray(train[label]).astype(str))
    return float(clf.score(xte, np.asarray(test[label]).astype(str)))


def pruning_costs(train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray],
                  desc: DataDescription, label: str) -> PruningReport:
    """Apply ``desc`` and measure what each dropped or generalised column cost.

    The accuracy is a logistic regression's on ``test`` (the data owner's own rows; nothing
    is released). The cost of a column is the accuracy the pruned table gains when that one
    column is put back as it was (positive = the column was useful); the total is
    ``accuracy_before - accuracy_after``. Identifier columns are scored too, so an
    identifier that *helps* (a leak such as a record number ordered by outcome) shows up.

    Raises:
        ConfigError: the description names a missing column, or ``label`` is not a column.
        DataError: the label has a single class in ``train``.
    """
    if label not in train or label not in test:
        raise ConfigError(f"label {label!r} is not a column", key="description")
    if len(np.unique(np.asarray(train[label]).astype(str))) < 2:
        raise DataError("the label has a single class in the training rows")
    ptr, rep = apply_description(train, desc, keep=[label])
    pte, _ = apply_description(test, desc, keep=[label])
    feats_all = [c for c in train if c != label]
    feats_after = [c for c in ptr if c != label]
    rep.accuracy_before = _accuracy(train, test, feats_all, label)
    rep.accuracy_after = _accuracy(ptr, pte, feats_after, label)
    for c in list(rep.dropped) + list(rep.generalised):
        tr = {**ptr, c: np.asarray(train[c])}
        te = {**pte, c: np.asarray(test[c])}
        cols = feats_after + ([c] if c not in feats_after else [])
        rep.costs[c] = _accuracy(tr, te, cols, label) - rep.accuracy_after
    return rep
