"""The ``veil synth`` TOML config, and reading / writing the tables it names.

Config (TOML)::

    name = "clinic-synth"          # output folder name
    output_dir = "runs"

    [synth]                        # SynthSettings: epsilon, delta, mechanism, cliques, ...
    epsilon = 1.0
    delta = 1e-5
    mechanism = "mst"

    [data]
    path = "clinic.csv"            # one table, or: sites = { a = "a.csv", b = "b.csv" }
    test_fraction = 0.2            # rows each site holds out for evaluation only

    [schema]                       # the public schema (TableSchema.from_dict)
    label = "outcome"
    [[schema.columns]]
    name = "age"
    type = "numeric"
    low = 0
    high = 100

    [description]                  # optional tiers (veil.data.pruning)
    sensitive = ["outcome"]        # stricter per-column noise (synth.sensitive_noise_factor)
    [description.quasi_identifiers]
    age = { width = 10 }           # generalised before synthesis

    [evaluate]
    classifier = "logreg"          # or "gbdt"

    [policy]                       # optional: veil.audit.policy.Policy
    max_epsilon = 1.0

The run itself (synthesise, evaluate, check the policy, report) is assembled a layer
up, in :func:`veil.cli.cmd_synth.run_synth`: this package sits below audit and report.
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from veil.errors import ConfigError, DataError
from veil.synth.api import SynthSettings
from veil.synth.schema import Table, TableSchema, n_rows

__all__ = ["load_synth_config", "load_site_tables", "read_csv_table", "split_table",
           "write_csv_table"]

_TOP = {"name", "output_dir", "synth", "data", "schema", "description", "evaluate", "policy"}
_SETTINGS = {"epsilon", "delta", "mechanism", "cliques", "sensitive", "sensitive_noise_factor",
             "rows", "iters", "seed"}


def read_csv_table(path: str | Path, columns: list[str]) -> Table:
    """The named columns of a CSV file with a header row, as string arrays.

    Raises:
        DataError: missing file or column, ragged rows.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"CSV file not found: {p}")
    with open(p, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DataError(f"{p}: needs a header row and data rows")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{p}: columns {missing} not in header {header}")
    idx = [header.index(c) for c in columns]
    body = [r for r in rows[1:] if r]
    for n, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise DataError(f"{p}:{n}: expected {len(header)} fields, got {len(r)}")
    return {c: np.array([r[i].strip() for r in body], dtype=object) for c, i in zip(columns, idx)}


def write_csv_table(path: Path, table: Mapping[str, np.ndarray], schema: TableSchema) -> None:
    """Write a table in schema column order (numbers with 6 significant digits)."""
    cols = schema.names
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for row in zip(*(np.asarray(table[c]) for c in cols)):
            w.writerow([f"{v:.6g}" if isinstance(v, (float, np.floating)) else v for v in row])


def split_table(table: Mapping[str, np.ndarray], test_fraction: float,
                seed: int) -> tuple[Table, Table]:
    """A seeded random split into (generator input, held-out evaluation rows)."""
    n = n_rows(table)
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * test_fraction)))
    te, tr = perm[:k], perm[k:]
    return ({c: np.asarray(v)[tr] for c, v in table.items()},
            {c: np.asarray(v)[te] for c, v in table.items()})


def load_synth_config(path: str | Path) -> dict[str, Any]:
    """Read and check a ``veil synth`` TOML config.

    Returns a dict with ``name``, ``output_dir``, ``settings`` (SynthSettings), ``schema``,
    ``sources`` (site -> CSV path, paths relative to the config), ``test_fraction``,
    ``classifier``, ``policy`` (the raw ``[policy]`` table, or None; it is parsed by
    :class:`veil.audit.policy.Policy`) and ``description`` (the ``[description]`` tiers of
    :mod:`veil.data.pruning`, or None: sensitive columns join ``synth.sensitive``).

    Raises:
        ConfigError: unreadable TOML, unknown keys, bad values.
    """
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    extra = set(raw) - _TOP
    if extra:
        raise ConfigError(f"unknown top-level keys {sorted(extra)}; allowed: {sorted(_TOP)}")
    s = dict(raw.get("synth") or {})
    bad = set(s) - _SETTINGS
    if bad:
        raise ConfigError(f"unknown keys {sorted(bad)}; allowed: {sorted(_SETTINGS)}",
                          key="synth")
    if "epsilon" not in s:
        raise ConfigError("the budget is required: epsilon = 1.0", key="synth.epsilon")
    schema = TableSchema.from_dict(raw.get("schema") or {})
    desc = _description(raw.get("description"), schema)
    if desc is not None and desc.sensitive:
        s["sensitive"] = sorted(set(s.get("sensitive", [])) | set(desc.sensitive))
    try:
        settings = SynthSettings(**s)
    except TypeError as e:
        raise ConfigError(str(e), key="synth") from None
    d = dict(raw.get("data") or {})
    bad = set(d) - {"path", "sites", "test_fraction"}
    if bad:
        raise ConfigError(f"unknown keys {sorted(bad)}", key="data")
    if ("path" in d) == ("sites" in d):
        raise ConfigError("give exactly one of path = 'file.csv' or sites = {id = 'file.csv'}",
                          key="data")
    base = p.parent
    sources = ({"dataset": base / str(d["path"])} if "path" in d
               else {str(k): base / str(v) for k, v in dict(d["sites"]).items()})
    tf = d.get("test_fraction", 0.2)
    if not isinstance(tf, (int, float)) or not 0 < tf < 1:
        raise ConfigError(f"must be in (0, 1), got {tf!r}", key="data.test_fraction")
    ev = dict(raw.get("evaluate") or {})
    if set(ev) - {"classifier"}:
        raise ConfigError(f"unknown keys {sorted(set(ev) - {'classifier'})}", key="evaluate")
    policy = raw.get("policy") or None
    return {
        "name": str(raw.get("name", p.stem)),
        "output_dir": base / str(raw.get("output_dir", "runs")),
        "settings": settings,
        "schema": schema,
        "sources": sources,
        "test_fraction": float(tf),
        "classifier": str(ev.get("classifier", "logreg")),
        "policy": policy,
        "description": desc,
    }


def _description(raw: Any, schema: TableSchema) -> Any:
    """The ``[description]`` tiers, checked against the schema: an identifier, or a
    quasi-identifier without a generalisation rule, is never synthesised.

    Raises:
        ConfigError: such a column is in the schema.
    """
    if not raw:
        return None
    from veil.data.pruning import ColumnRole, DataDescription

    desc = DataDescription.from_dict(raw)
    for c in schema.names:
        role = desc.role(c)
        if role == ColumnRole.IDENTIFIER or (role == ColumnRole.QUASI_IDENTIFIER
                                             and c not in desc.rules):
            raise ConfigError(
                f"column {c!r} is described as {role.value}"
                f"{'' if role == ColumnRole.IDENTIFIER else ' without a rule'}: it must not be "
                "synthesised; remove it from [schema] (or give it a generalisation rule)",
                key="description")
    return desc


def load_site_tables(cfg: Mapping[str, Any]) -> dict[str, tuple[Table, Table]]:
    """Each source's (generator input, held-out rows), split locally with a seeded shuffle.

    Raises:
        DataError: a file is missing or does not fit the schema.
    """
    schema: TableSchema = cfg["schema"]
    seed = cfg["settings"].seed
    out: dict[str, tuple[Table, Table]] = {}
    desc = cfg.get("description")
    for i, (site, src) in enumerate(cfg["sources"].items()):
        table = read_csv_table(src, schema.names)
        if desc is not None:  # quasi-identifiers generalised by their declared rule
            for c, rule in desc.rules.items():
                if c in table:
                    table[c] = rule.apply(table[c], c)
        table = _typed(table, schema)
        out[site] = split_table(table, cfg["test_fraction"], seed + i)
    return out


def _typed(table: Table, schema: TableSchema) -> Table:
    """Numeric schema columns as float arrays (CSV cells arrive as text).

    Raises:
        DataError: a numeric column with a non-numeric cell.
    """
    from veil.synth.schema import NumericColumn

    out = dict(table)
    for c in schema.columns:
        if isinstance(c, NumericColumn):
            try:
                out[c.name] = np.asarray(table[c.name], dtype=np.float64)
            except ValueError:
                raise DataError(f"column {c.name!r}: non-numeric value in a numeric column"
                                ) from None
    return out
