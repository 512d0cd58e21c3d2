"""SecAgg+ communication graph (Bell et al. 2020) and the choice of k and t.

Sites are placed on a ring in a pseudo-random order (AES-CTR PRG keyed by a public
per-round ``graph_seed``) and each is joined to the ``k/2`` sites on either side — a
Harary graph with a random labelling. ``k ≥ n − 1`` gives the complete graph, i.e.
classic SecAgg (Bonawitz et al. 2017).

Choice of (k, t) — :func:`choose_k`. With n sites, an expected dropout fraction δ, a
tolerated fraction γ of corrupt (colluding) sites, statistical security σ and
correctness η (bits), take the smallest even k and then the smallest t with

1. ``t > k/2`` (two sets of t holders always intersect, so together with the client rule
   "never reveal both secrets of one peer" the server cannot learn both of a site's secrets);
2. security: ``n · P[Bin(k, γ) ≥ t] ≤ 2^−σ`` (no site has t corrupt neighbours);
3. correctness: ``n · P[Bin(k, 1 − δ − γ) < t] ≤ 2^−η`` (every site keeps t honest,
   surviving neighbours to recover its secrets);
4. connectivity: ``n · (δ + γ)^(k/2) ≤ 2^−σ`` (no run of k/2 consecutive failed sites on
   the ring, so the honest survivors' masks stay connected and only their sum is revealed).

Each condition is a union bound over the n sites with binomial tails (sampling with
replacement, slightly conservative vs. the hypergeometric), assuming dropouts and
corruptions are independent of the random ring order (static adversary, graph seed drawn
after corruption). All tails decay exponentially in k, hence ``k = O(log n)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from veil.crypto.prg import prg_uint64
from veil.errors import ConfigError

__all__ = ["GraphParams", "choose_k", "neighbours", "neighbours_of", "ring_order"]


@dataclass(frozen=True)
class GraphParams:
    """Neighbourhood size ``k`` (neighbours per site, self excluded) and threshold ``t``.

    Attributes:
        k: neighbours per site; ``n − 1`` means the complete graph (classic SecAgg).
        t: shares needed to rebuild a secret (out of a site's k holders).
        complete: whether the graph is complete.
        guaranteed: whether all four conditions of the module docstring hold.
    """

    k: int
    t: int
    complete: bool
    guaranteed: bool


def _log_binom_pmf(k: int, i: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if i == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if i == k else -math.inf
    return (
        math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1)
        + i * math.log(p) + (k - i) * math.log1p(-p)
    )


def _tail_ge(k: int, p: float, m: int) -> float:
    """P[Bin(k, p) ≥ m]."""
    return min(1.0, sum(math.exp(_log_binom_pmf(k, i, p)) for i in range(max(m, 0), k + 1)))


def _conditions(
    n: int, k: int, t: int, dropout: float, corrupt: float, sigma: int, eta: int
) -> bool:
    sec = n * _tail_ge(k, corrupt, t) <= 2.0**-sigma
    cor = n * (1.0 - _tail_ge(k, max(0.0, 1.0 - dropout - corrupt), t)) <= 2.0**-eta
    con = k >= n - 1 or n * (dropout + corrupt) ** (k / 2) <= 2.0**-sigma
    return sec and cor and con


def choose_k(
    n: int, dropout: float = 0.1, corrupt: float = 0.1, sigma: int = 40, eta: int = 20
) -> GraphParams:
    """Smallest even k (and smallest t) meeting the conditions of the module docstring.

    Falls back to the complete graph (k = n − 1, t = ⌊(n−1)/2⌋ + 1) when no sparser
    graph meets them; ``guaranteed`` then says whether the complete graph does.

    Raises:
        ConfigError: if n < 2 or the fractions are outside [0, 1) or δ + γ ≥ 1.
    """
    if n < 2:
        raise ConfigError(f"secure aggregation needs at least 2 sites, got {n}")
    if not (0 <= dropout < 1 and 0 <= corrupt < 1 and dropout + corrupt < 1):
        raise ConfigError("dropout and corrupt must be fractions with dropout + corrupt < 1")
    for k in range(2, n - 1, 2):
        for t in range(k // 2 + 1, k + 1):
            if n * _tail_ge(k, corrupt, t) <= 2.0**-sigma:
                if _conditions(n, k, t, dropout, corrupt, sigma, eta):
                    return GraphParams(k, t, False, True)
                break
    k = n - 1
    t = k // 2 + 1
    ok = _conditions(n, k, t, dropout, corrupt, sigma, eta)
    return GraphParams(k, t, True, ok)


def ring_order(site_ids: Sequence[int], graph_seed: bytes) -> list[int]:
    """The cohort in the pseudo-random ring order fixed by ``graph_seed``."""
    ids = sorted(int(i) for i in site_ids)
    order = np.argsort(prg_uint64(graph_seed, len(ids)), kind="stable")
    return [ids[i] for i in order]


def neighbours_of(ring: Sequence[int], position: int, k: int) -> frozenset[int]:
    """Neighbours of the site at ``position`` on ``ring`` (self excluded).

    Raises:
        ConfigError: if k is odd and below n − 1, or not positive.
    """
    n = len(ring)
    if k >= n - 1:
        return frozenset(ring) - {ring[position]}
    if k < 2 or k % 2:
        raise ConfigError(f"k must be even and ≥ 2 for a sparse graph, got {k}")
    half = k // 2
    return frozenset(ring[(position + j) % n] for j in range(-half, half + 1) if j != 0)


def neighbours(site_ids: Sequence[int], k: int, graph_seed: bytes) -> dict[int, frozenset[int]]:
    """Each site's neighbours (self excluded) in the random-ring Harary graph.

    Args:
        site_ids: the cohort (distinct ids).
        k: neighbours per site; even, or ≥ n − 1 for the complete graph.
        graph_seed: public 32-byte seed fixing the ring order for this round.

    Raises:
        ConfigError: if k is odd and below n − 1, or not positive.
    """
    ring = ring_order(site_ids, graph_seed)
    return {u: neighbours_of(ring, pos, k) for pos, u in enumerate(ring)}
