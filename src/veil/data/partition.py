"""Split a training set across sites: IID, Dirichlet(α) label skew, quantity skew. Seeded."""

from __future__ import annotations

import numpy as np

from veil.errors import ConfigError

__all__ = ["partition", "PARTITIONS"]

PARTITIONS = ("iid", "dirichlet", "quantity")


def partition(
    labels: np.ndarray,
    n_sites: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = 2,
) -> list[np.ndarray]:
    """Indices of the examples each site holds.

    Args:
        labels: training labels (class ids; for regression only ``iid``/``quantity`` apply).
        n_sites: number of sites.
        scheme: ``"iid"`` (equal shuffled shards), ``"dirichlet"`` (each class split across
            sites by Dirichlet(α) proportions: small α → strong label skew), or
            ``"quantity"`` (site sizes drawn from Dirichlet(α), labels IID).
        alpha: concentration for the Dirichlet schemes (> 0).
        seed: partition seed.
        min_size: every site gets at least this many examples (redrawn otherwise).

    Returns:
        A list of ``n_sites`` sorted index arrays, disjoint, covering every example.

    Raises:
        ConfigError: impossible parameters (more sites than examples allow, α ≤ 0...).
    """
    n = len(labels)
    if n_sites < 1:
        raise ConfigError("must be at least 1", key="data.sites")
    if n_sites * min_size > n:
        raise ConfigError(
            f"{n_sites} sites x {min_size} examples need {n_sites * min_size} examples, "
            f"the training set has {n}; use fewer sites",
            key="data.sites",
        )
    if scheme not in PARTITIONS:
        raise ConfigError(
            f"unknown scheme {scheme!r}; choose one of {PARTITIONS}", key="data.partition"
        )
    if scheme != "iid" and not alpha > 0:
        raise ConfigError(f"must be > 0, got {alpha}", key="data.alpha")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        perm = rng.permutation(n)
        return [np.sort(s) for s in np.array_split(perm, n_sites)]
    if scheme == "quantity":
        for _ in range(1000):
            props = rng.dirichlet(np.full(n_sites, alpha))
            sizes = np.floor(props * (n - n_sites * min_size)).astype(int) + min_size
            sizes[np.argmax(sizes)] += n - sizes.sum()
            if sizes.min() >= min_size:
                break
        perm = rng.permutation(n)
        return [np.sort(s) for s in np.split(perm, np.cumsum(sizes)[:-1])]
    # dirichlet label skew
    classes = np.unique(labels)
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(n_sites)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            props = rng.dirichlet(np.full(n_sites, alpha))
            cuts = (np.cumsum(props) * len(idx)).astype(int)[:-1]
            for s, chunk in enumerate(np.split(idx, cuts)):
                parts[s].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ConfigError(
        f"could not give every one of {n_sites} sites {min_size} examples with alpha={alpha}; "
        "raise alpha or use fewer sites",
        key="data.alpha",
    )
