"""Where a deployed site's data comes from: its own file, or its part of a bundled set.

From the SuperNode's node config:

* ``data = "/path/site.csv"`` (and ``test = ...`` if the run's ``data.files`` entry has a
  test file) — the site's own file, read by :func:`veil.data.load_site` with the run's
  declared ``data.schema``: the simulation's per-site preprocessing and holdout (the same
  seed :func:`veil.data.load_sites` gives site ``i``);
* ``dataset = "digits"`` (or another bundled set) with ``partition-id = i`` — the bundled
  set, partitioned exactly as the simulation of the same config partitions it, part ``i``.

``partition-id`` is also the site's public id (its SecAgg+ party name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from veil.errors import ConfigError, DataError

__all__ = ["BUNDLED", "SiteData", "load_site_data", "node_flag"]

BUNDLED = ("digits", "breast_cancer", "diabetes")


def node_flag(node_config: Mapping[str, Any], key: str) -> bool:
    """A boolean node-config value (``true``/``1``/``yes``)."""
    v = node_config.get(key, False)
    return v is True or str(v).lower() in ("1", "true", "yes")


@dataclasses.dataclass(frozen=True)
class SiteData:
    """A site's own training (and test) data.

    Attributes:
        x, y: training features and labels.
        x_test, y_test: the site's test split (empty for a bundled set's part).
        task: ``"classification"`` or ``"regression"``.
        n_classes: number of classes (1 for regression).
    """

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    n_classes: int

    def __repr__(self) -> str:  # never the data
        return f"SiteData(n={len(self.y)}, task={self.task!r})"


def _site_id(node_config: Mapping[str, Any], n_sites: int) -> int:
    if "partition-id" not in node_config:
        raise ConfigError(
            "the SuperNode's node config needs partition-id = <this site's id>",
            key="node-config.partition-id",
        )
    site = int(node_config["partition-id"])
    if not 0 <= site < n_sites:
        raise ConfigError(
            f"partition-id {site} not in [0, {n_sites}) (data.sites of the run config)",
            key="node-config.partition-id",
        )
    return site


def _own_file(cfg: Any, site: int, node_config: Mapping[str, Any]) -> SiteData:
    """The site's file through :func:`veil.data.load_site`, as ``load_sites`` reads entry i."""
    from veil.data import load_site

    if "data" not in node_config:
        raise ConfigError(
            "the run config lists each site's file (data.files): point this SuperNode at its "
            "own with data = '/path/to/site.csv' (veil deploy supernode --data)",
            key="node-config.data",
        )
    entry = cfg.data.files[site]
    test = node_config.get("test")
    if entry.test is not None and test is None:
        raise ConfigError(
            f"data.files[{site}] has a separate test file: give this site's with test = "
            "'/path/to/test.csv' (veil deploy supernode --test)",
            key="node-config.test",
        )
    src = entry.model_copy(update={"path": str(node_config["data"]),
                                   "test": None if test is None else str(test)})
    # load_sites seeds site i's holdout with this value (the same split as in simulation)
    seed = int(np.random.SeedSequence([cfg.seed, site]).generate_state(1)[0] >> 1)
    split = load_site(src, cfg.data.site_schema, seed)
    schema = cfg.data.site_schema
    return SiteData(split.x_train, split.y_train, split.x_test, split.y_test,
                    schema.label.task, schema.label.n_classes)


def load_site_data(cfg: Any, node_config: Mapping[str, Any]) -> tuple[SiteData, int]:
    """This site's data and its site id, from its node config.

    Raises:
        ConfigError: the node config names no data, or a partition id out of range.
        DataError: the file cannot be read.
    """
    from veil.data import partition

    site = _site_id(node_config, int(cfg.data.sites))
    if cfg.data.files:
        return _own_file(cfg, site, node_config), site
    name = str(node_config.get("dataset", cfg.data.dataset))
    if name != cfg.data.dataset or name not in BUNDLED:
        raise ConfigError(
            f"node config names no data for data.dataset = {cfg.data.dataset!r}: use a "
            f"bundled set ({list(BUNDLED)}) as in the run config, or list the sites' files "
            "in data.files and give each SuperNode its own with data = '/path'",
            key="node-config.data",
        )
    from veil.federation.build import load_data

    full = load_data(cfg)
    labels = (full.y_train if full.task == "classification"
              else np.zeros(len(full.y_train), dtype=np.int64))
    scheme = cfg.data.partition
    if full.task != "classification" and scheme == "dirichlet":
        scheme = "iid"
    part = partition(labels, int(cfg.data.sites), scheme, cfg.data.alpha, seed=cfg.seed)[site]
    if len(part) == 0:
        raise DataError(f"partition {site} of {name} is empty")
    empty = full.x_test[:0]
    return SiteData(full.x_train[part], full.y_train[part], empty, full.y_test[:0],
                    full.task, full.n_classes), site
