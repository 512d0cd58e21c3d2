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
"""

from __future__ import annotations

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
    "epsilon_lower_bound",
    "insert_canaries",
    "load_canaries",
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

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def _k_grid(m: int) -> list[tuple[int, int]]:
    fr = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    ks = sorted({max(1, int(round(f * m))) for f in fr if f * m >= 1})
    return [(k, k) for k in ks] or [(1, 1)]


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
    best: OneRunResult | None = None
    for kp, kn in choices:
        v = int(inc[order[:kp]].sum()) + int((~inc[order[m - kn:]]).sum() if kn else 0)
        eps = epsilon_lower_bound(m, kp + kn, v, delta, conf_each)
        res = OneRunResult(eps, m, kp, kn, kp + kn, v, delta, confidence, len(choices))
        if best is None or res.epsilon_lower > best.epsilon_lower:
            best = res
    return best  # type: ignore[return-value]


@dataclass
class CanarySet:
    """Canary examples and their secret inclusion bits.

    Attributes:
        x, y: the m canaries (mislabelled examples held out of the normal training data).
        included: m booleans, True where the canary was inserted into the training data.
        seed: seed of the coin and the choice.
    """

    x: np.ndarray
    y: np.ndarray
    included: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.y)


def insert_canaries(
    x_train: np.ndarray, y_train: np.ndarray, n_canaries: int, seed: int, n_classes: int
) -> tuple[np.ndarray, np.ndarray, CanarySet]:
    """Turn ``n_canaries`` training examples into canaries and insert about half of them.

    Each chosen example gets a random *wrong* label (a mislabelled example is only learnt
    by memorising it, which is what DP bounds) and is removed from the normal data; a
    seeded fair coin per canary decides whether it goes back in. The returned training
    set is shuffled (seeded) so canaries spread over the sites when it is partitioned.

    Args:
        x_train, y_train: training data (classification).
        n_canaries: m; at most half the training set.
        seed: seed for the choice, labels, coins and shuffle (keep it secret from the
            trainer if the audit must be blind; record it in the run directory).
        n_classes: number of classes (>= 2).

    Returns:
        ``(x_new, y_new, canaries)``.

    Raises:
        ConfigError: bad counts or labels.
    """
    n = len(y_train)
    if n_classes < 2 or not 1 <= n_canaries <= n // 2 or len(x_train) != n:
        raise ConfigError(
            f"need 1 <= n_canaries <= {n // 2} and a classification set (got {n_canaries})",
            key="audit.canaries",
        )
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xCA7A]))
    pick = rng.choice(n, size=n_canaries, replace=False)
    y_true = np.asarray(y_train)[pick].astype(np.int64)
    y_can = (y_true + rng.integers(1, n_classes, size=n_canaries)) % n_classes
    included = rng.random(n_canaries) < 0.5
    keep = np.ones(n, dtype=bool)
    keep[pick] = False
    x_can = np.asarray(x_train)[pick]
    x_new = np.concatenate([np.asarray(x_train)[keep], x_can[included]])
    y_new = np.concatenate([np.asarray(y_train)[keep], y_can[included].astype(y_train.dtype)])
    perm = rng.permutation(len(y_new))
    cs = CanarySet(x_can.astype(np.float32), y_can, included, int(seed))
    return x_new[perm], y_new[perm], cs


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
    np.savez_compressed(
        path, x=canaries.x, y=canaries.y, included=canaries.included, seed=canaries.seed
    )


def load_canaries(path: str | os.PathLike[str]) -> CanarySet:
    """Load a canary set written by :func:`save_canaries`.

    Raises:
        DataError: missing or malformed file.
    """
    try:
        with np.load(path) as z:
            return CanarySet(z["x"], z["y"], z["included"].astype(bool), int(z["seed"]))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"cannot read canaries from {path}: {e}") from None
