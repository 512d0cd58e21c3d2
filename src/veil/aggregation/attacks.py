"""Attacks by bad sites, to test and measure the defences (never used by an honest run).

A *site behaviour* replaces what some sites send: the simulation hands it every trained
update of the round (``Simulation(behaviour=...)``) and sends the rows it returns.

* :class:`SignFlip` — ``u ↦ −s·u``: an untargeted attack that pushes the model backwards
  (with 20% of sites and ``s = 4`` a plain mean stops moving; beyond that it diverges);
* :class:`Boost` — ``u ↦ λ·u``: a scaled update (alone: a too-large step; combined with
  poisoned data: a model-replacement backdoor, Bagdasaryan et al. 2020);
* a **backdoor**: :func:`poison_sites` gives the malicious sites training data where a
  share of their examples carry a trigger pattern (:class:`Trigger`, a bright corner patch
  on the 8×8 digits) relabelled to a target class; :func:`backdoor_success` measures the
  share of triggered test images (true class ≠ target) the model puts in the target class.

:class:`Malicious` applies an attack to a chosen set of sites (:func:`choose_malicious`:
a seeded draw of a fraction of the sites). Attacks are deterministic given their inputs
(no hidden randomness), so runs under attack are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from veil.data import Dataset
from veil.errors import ConfigError

__all__ = [
    "SiteBehaviour",
    "SignFlip",
    "Boost",
    "Malicious",
    "choose_malicious",
    "Trigger",
    "DIGITS_TRIGGER",
    "poison_sites",
    "backdoor_success",
]


@runtime_checkable
class SiteBehaviour(Protocol):
    """What some sites send instead of their trained update."""

    def apply(
        self, round: int, site_ids: np.ndarray, updates: np.ndarray, params: np.ndarray
    ) -> np.ndarray:
        """The rows the sites ``site_ids`` send, given their trained ``updates`` (one row
        each) and the global ``params`` they trained from."""
        ...


@dataclass(frozen=True)
class SignFlip:
    """Send ``−scale · u`` (the update pointing backwards, scaled)."""

    scale: float = 4.0

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """The flipped rows."""
        return -self.scale * u


@dataclass(frozen=True)
class Boost:
    """Send ``factor · u`` (a scaled / boosted update)."""

    factor: float = 10.0

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """The boosted rows."""
        return self.factor * u


@dataclass(frozen=True)
class Malicious:
    """Apply ``attack`` to the rows of the sites in ``sites``; the others are unchanged.

    Args:
        sites: ids of the malicious sites.
        attack: a row-wise map (``SignFlip``, ``Boost`` or any callable on ``(k, d)``).
        start_round: first round the sites attack.
    """

    sites: frozenset[int]
    attack: Callable[[np.ndarray], np.ndarray]
    start_round: int = 0
    _ids: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", frozenset(int(s) for s in self.sites))
        object.__setattr__(self, "_ids", np.asarray(sorted(self.sites), dtype=np.int64))

    def apply(
        self, round: int, site_ids: np.ndarray, updates: np.ndarray, params: np.ndarray
    ) -> np.ndarray:
        """``updates`` with the malicious sites' rows replaced by the attack's."""
        if round < self.start_round:
            return updates
        bad = np.isin(np.asarray(site_ids), self._ids)
        if not bad.any():
            return updates
        out = np.array(updates, copy=True)
        out[bad] = self.attack(out[bad])
        return out


def choose_malicious(n_sites: int, fraction: float, seed: int) -> frozenset[int]:
    """A seeded choice of ``round(fraction · n_sites)`` malicious sites.

    Raises:
        ConfigError: ``fraction`` outside ``[0, 1)``.
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"attacker fraction must be in [0, 1), got {fraction}")
    k = int(round(fraction * n_sites))
    rng = np.random.default_rng([seed, 0xBAD])
    return frozenset(int(s) for s in rng.choice(n_sites, size=k, replace=False))


@dataclass(frozen=True)
class Trigger:
    """A backdoor trigger: set ``pixels`` (flat indices of one example) to ``value``.

    Attributes:
        pixels: flat feature indices of the pattern.
        value: what those features are set to.
        target: the label a triggered example is relabelled to.
    """

    pixels: tuple[int, ...]
    value: float = 1.0
    target: int = 0

    def stamp(self, x: np.ndarray) -> np.ndarray:
        """A copy of the examples ``x`` (``(n, ...)``) with the trigger set."""
        out = np.array(x, copy=True)
        flat = out.reshape(out.shape[0], -1)
        flat[:, list(self.pixels)] = self.value
        return out


#: a 2x2 bright patch in the bottom-right corner of the 8x8 digits, relabelled to 0
DIGITS_TRIGGER = Trigger(pixels=(54, 55, 62, 63), value=1.0, target=0)


def poison_sites(
    dataset: Dataset,
    parts: Sequence[np.ndarray],
    malicious: frozenset[int] | Sequence[int],
    trigger: Trigger,
    fraction: float = 0.5,
    seed: int = 0,
) -> tuple[Dataset, list[np.ndarray]]:
    """The malicious sites' data with a share of their examples triggered and relabelled.

    Triggered copies are appended to the training set and swapped into the malicious
    sites' parts (each keeps its size); honest sites' parts and the test set are unchanged.

    Returns:
        ``(dataset, parts)`` to build the federation from.

    Raises:
        ConfigError: ``fraction`` outside ``(0, 1]``.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"poisoned fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng([seed, 0xB4C])
    xs, ys = [dataset.x_train], [dataset.y_train]
    offset = len(dataset.y_train)
    new_parts = [np.asarray(p).copy() for p in parts]
    for s in sorted(int(m) for m in malicious):
        p = new_parts[s]
        k = max(1, int(round(fraction * len(p))))
        pick = rng.choice(len(p), size=k, replace=False)
        xs.append(trigger.stamp(dataset.x_train[p[pick]]))
        ys.append(np.full(k, trigger.target, dtype=dataset.y_train.dtype))
        p[pick] = np.arange(offset, offset + k)
        offset += k
    poisoned = Dataset(
        dataset.name,
        np.concatenate(xs).astype(dataset.x_train.dtype, copy=False),
        np.concatenate(ys),
        dataset.x_test,
        dataset.y_test,
        dataset.task,
        dataset.n_classes,
    )
    return poisoned, new_parts


def backdoor_success(
    predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, trigger: Trigger
) -> float:
    """Share of triggered test examples (true label ≠ target) predicted as the target.

    Args:
        predict: labels for a batch of examples.
        x, y: the clean test set.
        trigger: the backdoor's trigger and target.
    """
    keep = np.asarray(y) != trigger.target
    if not keep.any():
        return 0.0
    pred = np.asarray(predict(trigger.stamp(np.asarray(x)[keep])))
    return float(np.mean(pred == trigger.target))
