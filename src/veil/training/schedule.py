"""Sampling schedules: which examples each site uses at each local step.

* :class:`ShuffledBatches` — ``epochs`` passes, each a fresh shuffle cut into minibatches
  (:func:`batch_schedule`; seeded per (seed, round, site, epoch), not privacy randomness).
* :class:`PoissonBatches` — DP-SGD's sampling: at every step each example joins the batch
  independently with probability ``q`` drawn from the site's CSPRNG stream
  (:func:`poisson_batches`); :meth:`PoissonBatches.compose` turns one step's DP event into
  the round's ``SelfComposed(PoissonSampled(q, step), T)``.

A schedule returns :class:`Batches`: indices and masks ``(steps, n_sites, width)``, which
steps each site takes, and (Poisson) each site's expected batch size, the fixed denominator
of the DP-SGD mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, overload

import numpy as np
from dp_accounting import dp_event as dpe

from veil.errors import ConfigError
from veil.training.streams import PrivacyStreams

__all__ = [
    "RoundSites",
    "Batches",
    "Schedule",
    "ShuffledBatches",
    "PoissonBatches",
    "batch_schedule",
    "poisson_batches",
]


@dataclass(frozen=True)
class RoundSites:
    """The group of sites a trainer runs one round for.

    Attributes:
        ids: the sites' ids (they key batch shuffles and privacy streams).
        sizes: examples each holds.
        seed: run seed (batch shuffles; not privacy randomness).
        round: round number.
        streams: the sites' privacy randomness.
    """

    ids: np.ndarray
    sizes: np.ndarray
    seed: int
    round: int
    streams: PrivacyStreams | None = None


@dataclass(frozen=True)
class Batches:
    """One round's minibatches for a group of sites.

    Attributes:
        idx: ``(steps, n_sites, width)`` indices into each site's padded data.
        mask: same shape, 1 where the slot holds a real example.
        active: ``(steps, n_sites)`` whether the site takes that step (a site whose
            schedule is over stops updating; an empty Poisson batch is still a step).
        expected: ``(n_sites,)`` expected batch size (Poisson), or ``None``.
    """

    idx: np.ndarray
    mask: np.ndarray
    active: np.ndarray
    expected: np.ndarray | None = None


class Schedule(Protocol):
    """How a site samples its local minibatches."""

    def plan(self, sites: RoundSites) -> Batches:
        """The round's batches for ``sites``."""
        ...

    def steps(self, n: int) -> int:
        """Local steps per round at a site holding ``n`` examples."""
        ...

    def compose(self, step_event: dpe.DpEvent, n: int) -> dpe.DpEvent:
        """The round's DP event at a site of ``n`` examples, from one step's event."""
        ...


@overload
def _splitmix64(x: np.uint64) -> np.uint64: ...
@overload
def _splitmix64(x: np.ndarray) -> np.ndarray: ...
def _splitmix64(x: np.ndarray | np.uint64) -> np.ndarray | np.uint64:
    """SplitMix64 finaliser: a fast, well-mixed hash of 64-bit words (not for privacy)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def batch_schedule(
    sizes: np.ndarray, site_ids: np.ndarray, batch_size: int, epochs: int, seed: int, round: int
) -> tuple[np.ndarray, np.ndarray]:
    """Minibatch indices for each site, padded to a common number of steps.

    Each site's shuffle of each epoch is a permutation keyed by a hash of
    (seed, round, site id, epoch, example), so it does not depend on which other sites are
    in the batch. The batch width is ``min(batch_size, largest site)``.

    Returns:
        ``(idx, mask)`` with shape ``(steps, n_sites, width)``: ``idx`` indexes a site's
        padded data, ``mask`` is 1 where the slot holds a real example.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    site_ids = np.asarray(site_ids, dtype=np.uint64)
    n = len(sizes)
    width = int(min(batch_size, sizes.max()))
    spe = -(-sizes // width)  # ceil: steps per epoch per site
    max_spe = int(spe.max())
    steps = epochs * max_spe
    slots = max_spe * width
    idx = np.zeros((epochs, n, slots), dtype=np.int64)
    mask = np.zeros((epochs, n, slots), dtype=np.float32)
    m = int(sizes.max())
    ex = np.arange(m, dtype=np.uint64)
    base = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ _splitmix64(np.uint64(round)))
    for e in range(epochs):
        h = _splitmix64(base ^ _splitmix64(site_ids * np.uint64(0x100000001B3) + np.uint64(e)))
        keys = _splitmix64(h[:, None] ^ (ex[None, :] * np.uint64(0xD6E8FEB86659FD93)))
        keys[ex[None, :] >= sizes[:, None].astype(np.uint64)] = np.uint64(0xFFFFFFFFFFFFFFFF)
        perm = np.argsort(keys, axis=1, kind="stable")
        # site i's b-th batch holds perm[i, b*width:(b+1)*width] (only the real ones)
        valid = np.arange(m)[None, :] < sizes[:, None]
        idx[e, :, :m] = perm
        mask[e, :, :m] = valid
    idx = idx.reshape(epochs, n, max_spe, width).transpose(0, 2, 1, 3).reshape(steps, n, width)
    mask = mask.reshape(epochs, n, max_spe, width).transpose(0, 2, 1, 3).reshape(steps, n, width)
    return np.ascontiguousarray(idx), np.ascontiguousarray(mask)


@dataclass(frozen=True)
class ShuffledBatches:
    """``epochs`` shuffled passes in minibatches of ``batch_size`` (plain local SGD).

    Not an amplifying sampler: a DP step event is composed over every step, unamplified.
    """

    batch_size: int = 32
    epochs: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 1:
            raise ConfigError("local batch_size and epochs must be >= 1", key="local")

    def plan(self, sites: RoundSites) -> Batches:
        """Shuffled minibatches (see :func:`batch_schedule`)."""
        idx, mask = batch_schedule(
            sites.sizes, sites.ids, self.batch_size, self.epochs, sites.seed, sites.round
        )
        return Batches(idx, mask, mask.sum(axis=2) > 0)

    def steps(self, n: int) -> int:
        """``epochs · ⌈n / batch_size⌉``."""
        return self.epochs * -(-int(n) // self.batch_size)

    def compose(self, step_event: dpe.DpEvent, n: int) -> dpe.DpEvent:
        """Every step composed, without amplification."""
        return dpe.SelfComposedDpEvent(step_event, self.steps(n))


def poisson_batches(
    rngs: list, sizes: np.ndarray, rates: np.ndarray, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-sampled batches for each site, padded to the largest batch drawn.

    Site *i* draws ``steps[i]`` batches over its ``sizes[i]`` examples, each example
    included independently with probability ``rates[i]`` (uniforms from ``rngs[i]``, a
    :class:`veil.crypto.SecureRng` each).

    Returns:
        ``(idx, mask)`` of shape ``(max steps, n_sites, width)``; steps past a site's own
        count have an all-zero mask.
    """
    picks: list[list[np.ndarray]] = []
    width = 1
    for rng, n, q, t in zip(rngs, sizes, rates, steps):
        sel = rng.uniform((int(t), int(n))) < q
        rows = [np.flatnonzero(r) for r in sel]
        width = max([width] + [len(r) for r in rows])
        picks.append(rows)
    tmax = int(max(steps)) if len(steps) else 0
    idx = np.zeros((tmax, len(sizes), width), dtype=np.int64)
    mask = np.zeros((tmax, len(sizes), width), dtype=np.float32)
    for i, rows in enumerate(picks):
        for t, r in enumerate(rows):
            idx[t, i, : len(r)] = r
            mask[t, i, : len(r)] = 1.0
    return idx, mask


@dataclass(frozen=True)
class PoissonBatches:
    """DP-SGD's Poisson sampling: rate ``q = min(1, B/n)`` (or a fixed rate), ``T`` steps.

    Args:
        expected_batch_size: B.
        sampling_rate: the same rate q at every site (overrides ``B / n``).
        epochs: expected passes per round; ``T = epochs · round(1/q)``.

    Raises:
        ConfigError: impossible parameters.
    """

    expected_batch_size: int = 64
    sampling_rate: float | None = None
    epochs: int = 1
    label: str = "dpsgd/sample"

    def __post_init__(self) -> None:
        if self.expected_batch_size < 1:
            raise ConfigError("must be >= 1", key="privacy.sample_level.expected_batch_size")
        if self.sampling_rate is not None and not 0 < self.sampling_rate <= 1:
            raise ConfigError("must be in (0, 1]", key="privacy.sample_level.sampling_rate")
        if self.epochs < 1:
            raise ConfigError("must be >= 1", key="privacy.sample_level.epochs")

    def rate(self, n: int) -> float:
        """Poisson rate q for a site holding ``n`` examples."""
        if self.sampling_rate is not None:
            return float(self.sampling_rate)
        return min(1.0, self.expected_batch_size / int(n))

    def steps(self, n: int) -> int:
        """DP-SGD steps per round for a site holding ``n`` examples."""
        return self.epochs * max(1, round(1.0 / self.rate(n)))

    def compose(self, step_event: dpe.DpEvent, n: int) -> dpe.DpEvent:
        """``SelfComposed(PoissonSampled(q, step_event), T)`` (no sampling when q = 1)."""
        q = self.rate(n)
        inner = step_event if q >= 1.0 else dpe.PoissonSampledDpEvent(q, step_event)
        return dpe.SelfComposedDpEvent(inner, self.steps(n))

    def plan(self, sites: RoundSites) -> Batches:
        """Poisson batches from each site's own ``label`` stream of this round.

        Raises:
            ConfigError: no privacy streams were given.
        """
        if sites.streams is None:
            raise ConfigError("Poisson sampling needs the sites' privacy streams")
        sizes = sites.sizes
        rngs = [sites.streams.stream(self.label, sites.round, int(s)) for s in sites.ids]
        rates = np.array([self.rate(int(n)) for n in sizes])
        steps = np.array([self.steps(int(n)) for n in sizes])
        idx, mask = poisson_batches(rngs, np.asarray(sizes), rates, steps)
        active = np.arange(idx.shape[0])[:, None] < steps[None, :]
        expected = np.asarray([q * int(n) for q, n in zip(rates, sizes)], dtype=np.float64)
        return Batches(idx, mask, active, expected)
