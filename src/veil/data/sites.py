"""Each site's own file: one CSV, IDX directory or NumPy ``.npz`` per site, read per site.

Every site's file is read and preprocessed on its own, with the shared declared
:class:`~veil.data.schema.Schema`; there is no pooled file and nothing is fitted on more
than one site's rows. The test data is either the site's own separate test file or a
seeded holdout of the site's rows; the record says which (:meth:`FederatedData.describe`).

Example:
    >>> from veil.data import Schema, SiteSource, load_sites
    >>> schema = Schema.model_validate({"label": {"name": "y", "classes": [0, 1]},
    ...                                 "numeric": [{"name": "age", "range": [0, 120]}]})
    >>> data = load_sites([SiteSource(path="a.csv"), SiteSource(path="b.csv",
    ...                    test="b_test.csv")], schema, seed=0)     # doctest: +SKIP
    >>> data.sites[1].test_source                                    # doctest: +SKIP
    'file b_test.csv'
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from veil.data.arrays import array_features, array_labels, read_arrays
from veil.data.datasets import Dataset
from veil.data.schema import Schema
from veil.errors import ConfigError, DataError

__all__ = [
    "SiteSource",
    "SiteSplit",
    "FederatedData",
    "FederatedArrays",
    "load_site",
    "load_sites",
    "parse_sources",
]


class SiteSource(BaseModel):
    """Where one site's data is.

    Attributes:
        path: the site's file: a ``.csv``, a ``.npz`` (arrays ``x`` and ``y``) or a directory
            of IDX files (``*images*`` and ``*labels*``, optionally gzipped).
        name: the site's name in records (default: the file name without suffix).
        test: the site's separate test file (same format); if unset, a holdout.
        holdout: share of the site's rows held out for testing when ``test`` is unset.
        format: ``auto`` (from the path), ``csv``, ``idx`` or ``npz``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(..., min_length=1)
    name: str | None = Field(None, min_length=1)
    test: str | None = None
    holdout: float = Field(0.2, gt=0, lt=1)
    format: Literal["auto", "csv", "idx", "npz"] = "auto"

    @property
    def site_name(self) -> str:
        """``name``, or the file name without its suffix."""
        return self.name or Path(self.path).name.removesuffix(".gz").rsplit(".", 1)[0]

    def resolved_format(self, path: Path | None = None) -> str:
        """The file format (``format``, or guessed from the path).

        Raises:
            DataError: the format cannot be told from the path.
        """
        if self.format != "auto":
            return self.format
        p = path or Path(self.path)
        if p.is_dir():
            return "idx"
        if p.suffix.lower() == ".csv":
            return "csv"
        if p.suffix.lower() == ".npz":
            return "npz"
        raise DataError(
            f"cannot tell the format of {p}: use a .csv or .npz file or an IDX directory, "
            "or set format = 'csv' | 'npz' | 'idx'"
        )


@dataclass(frozen=True)
class SiteSplit:
    """One site's preprocessed training and test data.

    Attributes:
        name: site name.
        x_train, y_train, x_test, y_test: float32 features and labels (int64 class ids or
            float32 targets).
        source: the training file.
        test_source: ``"file PATH"`` or ``"holdout 20% of the site's rows (stratified,
            seed N)"``.
        preprocessing: per column, what was done and whether it was fitted at the site.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    test_source: str
    preprocessing: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"SiteSplit({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"test_source={self.test_source!r})")


@dataclass(frozen=True)
class FederatedArrays:
    """Sites' data laid side by side for an in-process simulation (not pooled: each row
    still belongs to exactly one site, and each site was preprocessed on its own).

    Attributes:
        dataset: every site's rows one after the other (train and test).
        train_parts: indices of each site's training rows in ``dataset.x_train``.
        test_parts: indices of each site's test rows in ``dataset.x_test``.
        names: site names, in the same order.
    """

    dataset: Dataset
    train_parts: list[np.ndarray]
    test_parts: list[np.ndarray]
    names: list[str]


@dataclass(frozen=True)
class FederatedData:
    """All sites' data, each read and preprocessed by itself.

    Attributes:
        sites: one :class:`SiteSplit` per site.
        schema: the shared declared schema.
        task: ``"classification"`` or ``"regression"``.
        n_classes: number of declared classes (1 for regression).
        input_shape: shape of one example's features.
        feature_names: names of the encoded features (CSV), else ``[]``.
    """

    sites: tuple[SiteSplit, ...]
    schema: Schema
    task: str
    n_classes: int
    input_shape: tuple[int, ...]
    feature_names: list[str]

    def describe(self) -> dict[str, Any]:
        """Plain JSON for the run record: per site file, sizes, test source, preprocessing."""
        return {
            "kind": "per-site files",
            "task": self.task,
            "n_classes": self.n_classes,
            "classes": list(self.schema.label.classes or ()),
            "input_shape": list(self.input_shape),
            "feature_names": self.feature_names,
            "preprocessing": "per site: each site's own file, fitted on its own training rows "
            "only; declared categories, classes and public ranges are shared",
            "schema": self.schema.model_dump(mode="json"),
            "sites": [
                {"name": s.name, "file": s.source, "n_train": len(s.y_train),
                 "n_test": len(s.y_test), "test": s.test_source, "columns": s.preprocessing}
                for s in self.sites
            ],
        }

    def train_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each site's ``(x_train, y_train)``, in site order (for per-site trainers)."""
        return [(s.x_train, s.y_train) for s in self.sites]

    def test_sets(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Site name → ``(x_test, y_test)`` (for :func:`veil.models.metrics.evaluate_sites`)."""
        return {s.name: (s.x_test, s.y_test) for s in self.sites}

    def to_arrays(self) -> FederatedArrays:
        """Lay the sites' arrays side by side, with each site's row indices."""
        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts, axis=0)

        tr, te, start_tr, start_te = [], [], 0, 0
        for s in self.sites:
            tr.append(np.arange(start_tr, start_tr + len(s.y_train)))
            te.append(np.arange(start_te, start_te + len(s.y_test)))
            start_tr += len(s.y_train)
            start_te += len(s.y_test)
        ds = Dataset(
            "sites:" + ",".join(s.name for s in self.sites),
            cat([s.x_train for s in self.sites]), cat([s.y_train for s in self.sites]),
            cat([s.x_test for s in self.sites]), cat([s.y_test for s in self.sites]),
            self.task, self.n_classes,
        )
        return FederatedArrays(ds, tr, te, [s.name for s in self.sites])


def parse_sources(raw: object, key: str = "data.files") -> list[SiteSource]:
    """Validate a list of site entries (TOML ``[[data.files]]`` tables or path strings).

    Raises:
        ConfigError: naming the entry and key that is wrong.
    """
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ConfigError("must be a list with one entry per site", key=key)
    out: list[SiteSource] = []
    for i, entry in enumerate(raw):
        if isinstance(entry, SiteSource):
            out.append(entry)
            continue
        if isinstance(entry, (str, os.PathLike)):
            entry = {"path": os.fspath(entry)}
        try:
            out.append(SiteSource.model_validate(entry))
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key; a site entry has path, name, test, holdout, format"
            raise ConfigError(msg, key=f"{key}.{i}" + (f".{loc}" if loc else "")) from None
    names = [s.site_name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"site names must differ, {dup} repeat; give each entry a name", key=key)
    return out


# --- one site ----------------------------------------------------------------------------


def _holdout(
    y: np.ndarray, fraction: float, seed: int, task: str, where: str
) -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.model_selection import train_test_split

    n = len(y)
    if n < 2:
        raise DataError(f"{where}: {n} row(s); a holdout needs at least 2 (or give a test file)")
    rows = np.arange(n)
    note = f"holdout {fraction:.0%} of the site's rows"
    stratify = None
    if task == "classification":
        _, counts = np.unique(y, return_counts=True)
        n_test = int(np.ceil(fraction * n))
        if counts.min() >= 2 and len(counts) <= n_test <= n - len(counts):
            stratify = y
            note += " (stratified"
        else:
            note += " (not stratified: a class has fewer than 2 rows, or too few rows"
    else:
        note += " (random"
    try:
        tr, te = train_test_split(rows, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as e:
        raise DataError(f"{where}: cannot hold out {fraction:.0%} of {n} rows: {e}") from None
    return np.sort(tr), np.sort(te), note + f", seed {seed})"


def load_site(source: SiteSource, schema: Schema, seed: int = 0,
              base_dir: str | os.PathLike[str] | None = None) -> SiteSplit:
    """Read and preprocess one site's data on its own.

    Args:
        source: where the site's data is.
        schema: the shared declared schema.
        seed: seed of the site's holdout split (recorded).
        base_dir: relative paths are taken from here (default: the working directory).

    Raises:
        DataError: a missing or malformed file or value (naming file, row, column, value).
    """
    from veil.data.tabular import SitePreprocessor, read_table

    base = Path(base_dir) if base_dir is not None else Path()
    path = base / source.path
    if not path.exists():
        raise DataError(f"site {source.site_name!r}: {path} not found")
    fmt = source.resolved_format(path)
    test_path = base / source.test if source.test is not None else None
    name = source.site_name
    if fmt == "csv":
        table = read_table(path, schema)
        if test_path is None:
            tr, te, note = _holdout(table.y, source.holdout, seed, schema.label.task, str(path))
            test_table = table
        else:
            test_table = read_table(test_path, schema)
            tr, te, note = np.arange(len(table)), np.arange(len(test_table)), f"file {test_path}"
        prep = SitePreprocessor(schema, name).fit(table, tr)
        return SiteSplit(
            name, prep.transform(table, tr), table.y[tr], prep.transform(test_table, te),
            test_table.y[te], str(path), note, prep.describe(),
        )
    x_raw, y_raw, where = read_arrays(path, fmt, "train")
    if len(x_raw) != len(y_raw):
        raise DataError(f"{path}: {len(x_raw)} examples but {len(y_raw)} labels")
    x, y = array_features(x_raw, schema, where), array_labels(y_raw, schema, where)
    prep_note = {"features": {"range": f"public range {list(schema.array.range or ())} -> [0, 1]",
                              "none": "as stored"}[schema.array.scaling]}
    if test_path is None:
        tr, te, note = _holdout(y, source.holdout, seed, schema.label.task, str(path))
        return SiteSplit(name, x[tr], y[tr], x[te], y[te], str(path), note, prep_note)
    xt_raw, yt_raw, twhere = read_arrays(test_path, fmt, "test" if test_path == path else "train")
    if len(xt_raw) != len(yt_raw):
        raise DataError(f"{test_path}: {len(xt_raw)} examples but {len(yt_raw)} labels")
    xt, yt = array_features(xt_raw, schema, twhere), array_labels(yt_raw, schema, twhere)
    return SiteSplit(name, x, y, xt, yt, str(path), f"file {twhere}", prep_note)


def load_sites(
    sources: Sequence[SiteSource | Mapping[str, Any] | str],
    schema: Schema | Mapping[str, Any],
    seed: int = 0,
    base_dir: str | os.PathLike[str] | None = None,
) -> FederatedData:
    """Read every site's own file, each on its own (no pooling).

    Args:
        sources: one entry per site (:class:`SiteSource`, a mapping, or a path).
        schema: the shared declared schema (or its mapping).
        seed: seeds each site's holdout (site ``i`` uses a seed derived from
            ``(seed, i)``, recorded in its ``test_source``).
        base_dir: relative paths are taken from here.

    Raises:
        ConfigError: bad site entries or schema.
        DataError: unreadable or malformed files; sites whose features do not line up.
    """
    from veil.data.schema import parse_schema

    srcs = parse_sources(list(sources))
    sch = parse_schema(dict(schema) if isinstance(schema, Mapping) else schema)
    sites: list[SiteSplit] = []
    for i, src in enumerate(srcs):
        site_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0] >> 1)
        sites.append(load_site(src, sch, site_seed, base_dir))
    shape = tuple(sites[0].x_train.shape[1:])
    for s in sites[1:]:
        for part in (s.x_train, s.x_test):
            if tuple(part.shape[1:]) != shape:
                raise DataError(
                    f"site {s.name!r} ({s.source}) has examples of shape {tuple(part.shape[1:])}, "
                    f"site {sites[0].name!r} has {shape}: every site must hold the same features"
                )
    return FederatedData(
        tuple(sites), sch, sch.label.task, sch.label.n_classes, shape,
        sch.feature_names() if all(Path(s.source).suffix.lower() == ".csv" for s in sites) else [],
    )
