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

**Malicious server** (``model="malicious"``; Bonawitz et al. 2017 §6, Bell et al. 2020
§4). The server may show sites different survivor lists. A site reveals only after ≥ t of
its neighbours signed *its* list, and each honest site signs one list and reveals once, so
for the server to collect both a site's self-mask seed and its mask key (or its
neighbours' keys) it needs two disjoint groups of honest revealers among the site's
holders, each reaching t with the help of the c corrupt neighbours: 2(t − c) ≤ k − c. The
rule is therefore

1'. ``t > (k + c)/2`` where c bounds the corrupt neighbours of every site:
    ``n · P[Bin(k, γ) > c] ≤ 2^−(σ + g)`` (complete graph: c = ⌊γ·n⌋);

with conditions 3 and 4 unchanged. The extra ``g`` bits (``grind_bits``, default 40)
cover an adversary that tries up to 2^g graph seeds: in this mode the seed is a hash of
the signed advertisements, so the server (omitting advertisements) and corrupt sites
(re-drawing keys after seeing the honest ones) can bias it only by trying seeds, and a
union bound over 2^g tries keeps the failure probability at 2^−σ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from veil.crypto.prg import prg_uint64
from veil.errors import ConfigError, InsecureParametersError

__all__ = [
    "GraphParams", "choose_k", "choose_params", "check_malicious", "corrupt_bound",
    "neighbours", "neighbours_of", "ring_order", "MODELS",
]

#: the two threat models SecAgg+ parameters are chosen for
MODELS = ("semi-honest", "malicious")


@dataclass(frozen=True)
class GraphParams:
    """Neighbourhood size ``k`` (neighbours per site, self excluded) and threshold ``t``.

    Attributes:
        k: neighbours per site; ``n − 1`` means the complete graph (classic SecAgg).
        t: shares needed to rebuild a secret (out of a site's k holders).
        complete: whether the graph is complete.
        guaranteed: whether all four conditions of the module docstring hold.
        model: ``"semi-honest"`` or ``"malicious"`` (server).
        c: corrupt neighbours tolerated per site (malicious model; 0 otherwise).
    """

    k: int
    t: int
    complete: bool
    guaranteed: bool
    model: str = "semi-honest"
    c: int = 0


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


def corrupt_bound(n: int, k: int, corrupt: float, sigma: int = 40, grind_bits: int = 40) -> int:
    """c: the corrupt neighbours no site exceeds except with probability 2^−σ after 2^g
    tried graphs (complete graph: ⌊γ·n⌋, all corrupt sites)."""
    if k >= n - 1:
        return int(math.floor(corrupt * n))
    for c in range(k + 1):
        if n * _tail_ge(k, corrupt, c + 1) <= 2.0 ** -(sigma + grind_bits):
            return c
    return k


def _malicious(
    n: int, k: int, dropout: float, corrupt: float, sigma: int, eta: int, grind_bits: int
) -> GraphParams | None:
    c = corrupt_bound(n, k, corrupt, sigma, grind_bits)
    t = (k + c) // 2 + 1
    if t > k:
        return None
    cor = n * (1.0 - _tail_ge(k, max(0.0, 1.0 - dropout - corrupt), t)) <= 2.0**-eta
    con = k >= n - 1 or n * (dropout + corrupt) ** (k / 2) <= 2.0**-sigma
    return GraphParams(k, t, k >= n - 1, cor and con, "malicious", c)


def check_malicious(
    n: int, k: int, t: int, corrupt: float, sigma: int = 40, grind_bits: int = 40
) -> None:
    """Refuse (k, t) that do not hold against a malicious server with γ·n corrupt sites.

    Raises:
        InsecureParametersError: if t ≤ (k + c)/2 for the corrupt-neighbour bound c.
    """
    k = min(k, n - 1)
    c = corrupt_bound(n, k, corrupt, sigma, grind_bits)
    if not (k + c) / 2 < t <= k:
        raise InsecureParametersError(
            f"k={k}, t={t} do not hold against a malicious server: with up to c={c} corrupt "
            f"neighbours per site (γ={corrupt}, 2^-{sigma} after 2^{grind_bits} tried graphs) "
            f"t must exceed (k + c)/2 = {(k + c) / 2:g}; use choose_k(model='malicious') or "
            "set threat_model='semi-honest' explicitly"
        )


def choose_k(
    n: int,
    dropout: float = 0.1,
    corrupt: float = 0.1,
    sigma: int = 40,
    eta: int = 20,
    model: str = "semi-honest",
    grind_bits: int = 40,
) -> GraphParams:
    """Smallest even k (and smallest t) meeting the conditions of the module docstring
    for ``model`` (``"semi-honest"``: conditions 1–4; ``"malicious"``: 1', 3, 4).

    Falls back to the complete graph (k = n − 1) when no sparser graph meets them;
    ``guaranteed`` then says whether the complete graph does.

    Raises:
        ConfigError: if n < 2, the fractions are outside [0, 1), δ + γ ≥ 1, or an unknown
            model.
    """
    if n < 2:
        raise ConfigError(f"secure aggregation needs at least 2 sites, got {n}")
    if not (0 <= dropout < 1 and 0 <= corrupt < 1 and dropout + corrupt < 1):
        raise ConfigError("dropout and corrupt must be fractions with dropout + corrupt < 1")
    if model not in MODELS:
        raise ConfigError(f"unknown threat model {model!r}; use one of {MODELS}")
    if model == "malicious":
        for k in range(2, n - 1, 2):
            gp = _malicious(n, k, dropout, corrupt, sigma, eta, grind_bits)
            if gp is not None and gp.guaranteed:
                return gp
        full = _malicious(n, n - 1, dropout, corrupt, sigma, eta, grind_bits)
        if full is None:
            c = corrupt_bound(n, n - 1, corrupt)
            raise InsecureParametersError(
                f"no threshold holds against a malicious server for n={n} with {c} corrupt "
                "sites (t > (n − 1 + c)/2 exceeds n − 1)"
            )
        return full
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


def choose_params(
    n: int, dropout: float = 0.1, corrupt: float = 0.1, sigma: int = 40, eta: int = 20
) -> dict[str, GraphParams]:
    """(k, t) for both threat models: ``{"semi-honest": ..., "malicious": ...}``.

    Raises:
        ConfigError: as :func:`choose_k`.
        InsecureParametersError: no malicious-model threshold exists for these fractions.
    """
    return {m: choose_k(n, dropout, corrupt, sigma, eta, model=m) for m in MODELS}


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
