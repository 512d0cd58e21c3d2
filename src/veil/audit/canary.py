"""One-run privacy audit (Steinke, Nasr & Jagielski, NeurIPS 2023).

Steps:

1. Pick ``m`` canaries. For each, a coin ``S_i ∈ {-1, +1}`` (seeded, secret from the
   trainer's point of view) decides whether it is inserted into the training data (+1).
2. Train once. Score every canary on the released model (here: minus its loss).
3. Guess: the ``k+`` highest-scoring canaries are "in" (+1), the ``k-`` lowest "out" (-1),
   the rest abstain. ``r = k+ + k-`` guesses, ``v`` of them correct.
4. If the training algorithm were (ε, δ)-DP, the number of correct guesses would satisfy
   (the paper's Theorem for δ > 0, with ``q = e^ε / (1 + e^ε)``)::

       P[W ≥ v] ≤ β + 2 m δ α,   β = P[Binomial(r, q) ≥ v],
       α = max_{1 ≤ i ≤ v} P[v - i ≤ Binomial(r, q) < v] / i.

   The reported ε̂ is the largest ε whose p-value is still below ``1 - confidence``
   (binary search; the p-value decreases in ε): with that confidence the algorithm is
   *not* (ε̂, δ)-DP. An ε̂ above the claimed ε therefore signals a bug.

When several (k+, k-) choices are tried, the p-value threshold is divided by their number
(Bonferroni) so the bound stays valid at the stated confidence.

**Fixed partition.** The theorem compares runs that differ in one canary's coin only, so
flipping a coin must add or withhold *one example at one site* and change nothing else.
:func:`insert_canaries` therefore takes the canaries out of the normal data (a choice
independent of the coins), leaves the remaining data in its order, and assigns every
canary a fixed site (seeded, independent of the coins); :func:`canary_parts` adds each
included canary to its site's part of a partition computed on the normal data alone.
No reshuffle: the two neighbouring runs hold identical data everywhere except one example
at one site.

**What the audit can show.** With m canaries ε̂ cannot exceed the value reached when every
guess is right (:func:`max_epsilon_lower`); it is reported beside ε̂, and
:func:`canaries_for` gives the number of canaries needed for ε̂ to be able to exceed a
claimed ε at all. An audit whose maximum is below the claim cannot detect a violation.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from veil.errors import ConfigError, DataError

__all__ = [
    "CanarySet",
    "OneRunResult",
    "audit_canaries",
    "canaries_for",
    "canary_parts",
    "epsilon_lower_bound",
    "insert_canaries",
    "load_canaries",
    "max_epsilon_lower",
    "one_run_audit",
    "p_value_one_run",
    "save_canaries",
    "score_canaries",
]


def p_value_one_run(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P-value of ``v`` correct out of ``r`` guesses on ``m`` canaries under (ε, δ)-DP.

    Raises:
        ConfigError: unless ``0 <= v <= r <= m``, ``epsilon >= 0``, ``0 <= delta <= 1``.
    """
    from scipy.stats import binom

    if not (0 <= v <= r <= m) or epsilon < 0 or not (0.0 <= delta <= 1.0):
        raise ConfigError(f"need 0 <= v <= r <= m, eps >= 0, delta in [0,1]; got "
                          f"m={m} r={r} v={v} eps={epsilon} delta={delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(binom.sf(v - 1, r, q))
    alpha = 0.0
    if v > 0 and delta > 0:
        # P[v - i <= Bin < v] for i = 1..v is a running sum of the pmf at v-1, v-2, ..., 0.
        cum = np.cumsum(binom.pmf(np.arange(v - 1, -1, -1), r, q))
        alpha = float(np.max(cum / np.arange(1, v + 1)))
    return min(1.0, beta + 2.0 * m * delta * alpha)


def epsilon_lower_bound(
    m: int, r: int, v: int, delta: float, confidence: float = 0.95, iters: int = 50
) -> float:
    """Largest ε that the observation ``v`` correct of ``r`` rejects at ``confidence``.

    Returns 0.0 when even ε = 0 cannot be rejected.

    Raises:
        ConfigError: invalid counts, delta, or confidence outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    p = 1.0 - confidence
    if p_value_one_run(m, r, v, 0.0, delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value_one_run(m, r, v, hi, delta) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e3:
            return lo
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if p_value_one_run(m, r, v, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class OneRunResult:
    """An empirical ε lower bound from one training run.

    Attributes:
        epsilon_lower: ε̂ — with probability ``confidence`` the run is not (ε̂, δ)-DP.
        m: canaries; k_pos / k_neg: "in" / "out" guesses made; r: k_pos + k_neg;
        v: correct guesses; delta, confidence: as used; n_choices: (k+, k-) pairs tried.
        epsilon_max: the largest ε̂ this audit could have shown (every guess right): an
            ε̂ can only exceed a claimed ε below this value.
    """

    epsilon_lower: float
    m: int
    k_pos: int
    k_neg: int
    r: int
    v: int
    delta: float
    confidence: float
    n_choices: int
    epsilon_max: float = math.inf

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def _k_grid(m: int) -> list[tuple[int, int]]:
    fr = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    ks = sorted({min(m // 2, max(1, int(round(f * m)))) for f in fr if f * m >= 1} - {0})
    return [(k, k) for k in ks] or [(1, 0)]


def one_run_audit(
    scores: np.ndarray,
    included: np.ndarray,
    delta: float,
    confidence: float = 0.95,
    k_choices: Sequence[tuple[int, int]] | None = None,
) -> OneRunResult:
    """ε̂ from canary scores (higher = more likely included) and the secret inclusion bits.

    Args:
        scores: one score per canary.
        included: booleans, True where the canary was inserted.
        delta: δ of the claimed guarantee.
        confidence: e.g. 0.95.
        k_choices: (k+, k-) pairs to try; default a small grid of symmetric choices. The
            confidence is split across them (Bonferroni), so the result stays valid.

    Raises:
        ConfigError: mismatched lengths, empty input, or a k pair larger than m.
    """
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included, dtype=bool)
    m = len(s)
    if m == 0 or len(inc) != m:
        raise ConfigError(f"need one inclusion bit per score (got {m} scores, {len(inc)} bits)")
    if not np.isfinite(s).all():
        s = np.nan_to_num(s, nan=0.0, posinf=1e30, neginf=-1e30)
    choices = list(k_choices) if k_choices is not None else _k_grid(m)
    if any(kp < 0 or kn < 0 or kp + kn > m for kp, kn in choices):
        raise ConfigError(f"k+ + k- must be <= m={m}: {choices}")
    order = np.argsort(-s, kind="stable")  # highest first
    conf_each = 1.0 - (1.0 - confidence) / len(choices)
    top = max_epsilon_lower(m, delta, confidence, choices)
    best: OneRunResult | None = None
    for kp, kn in choices:
        v = int(inc[order[:kp]].sum()) + int((~inc[order[m - kn:]]).sum() if kn else 0)
        eps = epsilon_lower_bound(m, kp + kn, v, delta, conf_each)
        res = OneRunResult(eps, m, kp, kn, kp + kn, v, delta, confidence, len(choices), top)
        if best is None or res.epsilon_lower > best.epsilon_lower:
            best = res
    return best  # type: ignore[return-value]


def max_epsilon_lower(
    m: int,
    delta: float,
    confidence: float = 0.95,
    k_choices: Sequence[tuple[int, int]] | None = None,
) -> float:
    """The largest ε̂ an audit of ``m`` canaries can report (all guesses right).

    Uses the same (k+, k-) choices and Bonferroni split as :func:`one_run_audit`.

    Raises:
        ConfigError: ``m < 1`` or invalid δ / confidence.
    """
    if m < 1:
        raise ConfigError(f"need at least one canary, got {m}", key="audit.canaries")
    choices = tuple(k_choices) if k_choices is not None else tuple(_k_grid(m))
    return _max_epsilon_lower(int(m), float(delta), float(confidence), choices)


@functools.lru_cache(maxsize=256)
def _max_epsilon_lower(
    m: int, delta: float, confidence: float, choices: tuple[tuple[int, int], ...]
) -> float:
    conf_each = 1.0 - (1.0 - confidence) / len(choices)
    return max(epsilon_lower_bound(m, kp + kn, kp + kn, delta, conf_each) for kp, kn in choices)


def canaries_for(
    epsilon: float, delta: float, confidence: float = 0.95, limit: int = 20_000
) -> int | None:
    """An even number of canaries whose audit could show ε̂ > ``epsilon`` (default grid).

    Bisection over even counts (with an odd count the symmetric guess grid wastes one
    canary, so the maximum is not monotone there); the result is the smallest even count
    past which the maximum exceeds ``epsilon``.

    Returns ``None`` when even ``limit`` canaries cannot (large ε, or δ·m too large).

    Raises:
        ConfigError: invalid ε, δ or confidence.
    """
    if not epsilon >= 0:
        raise ConfigError(f"epsilon must be >= 0, got {epsilon}")

    def top(half: int) -> float:
        return max_epsilon_lower(2 * half, delta, confidence)

    hi = 1
    while top(hi) <= epsilon:
        if 2 * hi >= limit:
            return None
        hi = min(limit // 2, hi * 2)
    lo = hi // 2  # the maximum at 2·lo is <= epsilon (or lo = 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if top(mid) > epsilon:
            hi = mid
        else:
            lo = mid
    return 2 * hi


@dataclass
class CanarySet:
    """Canary examples and their secret inclusion bits.

    Attributes:
        x, y: the m canaries (mislabelled examples held out of the normal training data).
        included: m booleans, True where the canary was inserted into the training data.
        seed: seed of the coin and the choice.
        site: m site indices: the fixed site each canary goes to when included
            (``None`` for canary sets written before sites were assigned).
        base_size: number of normal (non-canary) training examples; included canaries
            follow them, in canary order.
    """

    x: np.ndarray
    y: np.ndarray
    included: np.ndarray
    seed: int
    site: np.ndarray | None = None
    base_size: int = -1

    def __len__(self) -> int:
        return len(self.y)


def insert_canaries(
    x_train: np.ndarray,
    y_train: np.ndarray,
    n_canaries: int,
    seed: int,
    n_classes: int,
    n_sites: int = 1,
) -> tuple[np.ndarray, np.ndarray, CanarySet]:
    """Turn ``n_canaries`` training examples into canaries and insert about half of them.

    Each chosen example gets a random *wrong* label (a mislabelled example is only learnt
    by memorising it, which is what DP bounds) and is removed from the normal data; a
    seeded fair coin per canary decides whether it goes back in, at a site fixed for it
    in advance. The normal data keep their order and come first; included canaries
    follow. Partition the first ``canaries.base_size`` rows and add the canaries with
    :func:`canary_parts`, so that one coin changes one example at one site.

    Args:
        x_train, y_train: training data (classification).
        n_canaries: m; at most half the training set.
        seed: seed for the choice, labels, coins and sites (keep it secret from the
            trainer if the audit must be blind; record it in the run directory).
        n_classes: number of classes (>= 2).
        n_sites: number of sites the canaries are spread over (uniformly, seeded).

    Returns:
        ``(x_new, y_new, canaries)``.

    Raises:
        ConfigError: bad counts or labels.
    """
    n = len(y_train)
    if n_classes < 2 or not 1 <= n_canaries <= n // 2 or len(x_train) != n or n_sites < 1:
        raise ConfigError(
            f"need 1 <= n_canaries <= {n // 2}, n_sites >= 1 and a classification set "
            f"(got {n_canaries} canaries, {n_sites} sites)",
            key="audit.canaries",
        )
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xCA7A]))
    pick = rng.choice(n, size=n_canaries, replace=False)
    y_true = np.asarray(y_train)[pick].astype(np.int64)
    y_can = (y_true + rng.integers(1, n_classes, size=n_canaries)) % n_classes
    included = rng.random(n_canaries) < 0.5
    site = np.random.default_rng(np.random.SeedSequence([int(seed), 0x517E])).integers(
        0, n_sites, size=n_canaries
    )
    keep = np.ones(n, dtype=bool)
    keep[pick] = False
    x_can = np.asarray(x_train)[pick]
    x_new = np.concatenate([np.asarray(x_train)[keep], x_can[included]])
    y_new = np.concatenate([np.asarray(y_train)[keep], y_can[included].astype(y_train.dtype)])
    cs = CanarySet(x_can.astype(np.float32), y_can, included, int(seed), site, int(keep.sum()))
    return x_new, y_new, cs


def canary_parts(base_parts: Sequence[np.ndarray], canaries: CanarySet) -> list[np.ndarray]:
    """Each site's indices into ``insert_canaries``'s data: its normal part + its canaries.

    Args:
        base_parts: a partition of the first ``canaries.base_size`` rows (the normal data),
            computed without the canaries.
        canaries: the canary set (its ``site`` and ``included``).

    Raises:
        ConfigError: the canary set has no sites, or a site outside the partition.
    """
    if canaries.site is None or canaries.base_size < 0:
        raise ConfigError("this canary set has no fixed sites (written by an older veil)")
    site = np.asarray(canaries.site)[np.asarray(canaries.included, dtype=bool)]
    if len(site) and int(site.max()) >= len(base_parts):
        raise ConfigError(
            f"canaries assigned to {int(site.max()) + 1} sites, partition has {len(base_parts)}",
            key="audit.canaries",
        )
    rows = canaries.base_size + np.arange(len(site))
    return [
        np.sort(np.r_[np.asarray(p, dtype=np.int64), rows[site == i]])
        for i, p in enumerate(base_parts)
    ]


def score_canaries(model: nn.Module, canaries: CanarySet, batch: int = 1024) -> np.ndarray:
    """Minus the cross-entropy loss of each canary under ``model`` (higher = 'in')."""
    model.eval()
    x = torch.from_numpy(np.asarray(canaries.x, dtype=np.float32))
    y = torch.from_numpy(np.asarray(canaries.y, dtype=np.int64))
    out = []
    with torch.no_grad():
        for i in range(0, len(y), batch):
            logits = model(x[i : i + batch])
            out.append(-nn.functional.cross_entropy(logits, y[i : i + batch], reduction="none"))
    return torch.cat(out).double().numpy()


def audit_canaries(
    model: nn.Module, canaries: CanarySet, delta: float, confidence: float = 0.95
) -> OneRunResult:
    """Score the canaries on the final model and compute ε̂ (see :func:`one_run_audit`)."""
    return one_run_audit(score_canaries(model, canaries), canaries.included, delta, confidence)


def save_canaries(path: str | os.PathLike[str], canaries: CanarySet) -> None:
    """Store a canary set (``.npz``) in the run directory."""
    extra = {} if canaries.site is None else {"site": canaries.site}
    np.savez_compressed(
        path, x=canaries.x, y=canaries.y, included=canaries.included, seed=canaries.seed,
        base_size=canaries.base_size, **extra,
    )


def load_canaries(path: str | os.PathLike[str]) -> CanarySet:
    """Load a canary set written by :func:`save_canaries`.

    Raises:
        DataError: missing or malformed file.
    """
    try:
        with np.load(path) as z:
            site = z["site"].astype(np.int64) if "site" in z.files else None
            base = int(z["base_size"]) if "base_size" in z.files else -1
            return CanarySet(
                z["x"], z["y"], z["included"].astype(bool), int(z["seed"]), site, base
            )
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"cannot read canaries from {path}: {e}") from None
