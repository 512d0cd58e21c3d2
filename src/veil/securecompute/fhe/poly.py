"""Polynomial activations: Chebyshev approximation on a calibrated range, and its evaluation
on ciphertexts with a Paterson–Stockmeyer-style baby-step/giant-step split in the Chebyshev
basis.

An activation f on [lo, hi] becomes p(t) = Σ c_j T_j(t) with t = (x - mid) / half ∈ [-1, 1];
the affine map x → t is folded into the preceding linear layer by the compiler, so the
ciphertext the evaluator sees is already t.

Evaluation (Bossuat et al. 2021, "Efficient Bootstrapping ...", §4.2, without bootstrapping):
baby steps T_1..T_{k-1} and giant steps T_k, T_2k, T_4k, ... are computed with
T_2n = 2T_n² − 1 and T_{m+n} = 2T_mT_n − T_{m−n}; p is split recursively as p = q·T_G + r
(Chebyshev division, numpy's ``chebdiv``) down to degree < k, whose terms are plaintext-scalar
products. Scales are exact: each part of the split is evaluated at the scale that makes
``q·T_G + r`` an exact sum (q at target·prime/scale(T_G), the baby terms' plaintexts encoded
to land on the target), so the result has the input's scale and no sum needs a fix-up however
far the powers' scales Δ_a·Δ_b/q drifted. :func:`plan_depth` simulates the recursion, and
:func:`best_baby` picks the k of least depth, then fewest ciphertext products.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.polynomial import chebyshev as C

from veil.errors import ConfigError

_TINY = 1e-9  # coefficients below this are dropped (they encode to 0 at any usable scale)

__all__ = ["ChebPoly", "approximate", "ACTIVATIONS", "plan_depth", "best_baby", "evaluate_poly"]


def _gelu(x: np.ndarray) -> np.ndarray:
    from math import erf, sqrt

    return x * 0.5 * (1.0 + np.vectorize(erf)(x / sqrt(2.0)))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": _gelu,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "square": lambda x: x * x,
}


@dataclass(frozen=True)
class ChebPoly:
    """p(x) = Σ coeffs[j] T_j((x - mid)/half) approximating ``name`` on [mid-half, mid+half].

    Attributes:
        max_err: max |p - f| measured on 2001 points of the interval.
    """

    name: str
    coeffs: tuple[float, ...]
    mid: float
    half: float
    max_err: float

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1

    def eval_t(self, t: np.ndarray) -> np.ndarray:
        """The series at normalised inputs t = (x - mid) / half."""
        return C.chebval(np.asarray(t), np.asarray(self.coeffs))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.eval_t((np.asarray(x) - self.mid) / self.half)


def approximate(name: str, lo: float, hi: float, degree: int) -> ChebPoly:
    """Chebyshev interpolant of activation ``name`` on [lo, hi] (near-minimax).

    Raises:
        ConfigError: unknown activation, empty interval or degree < 1.
    """
    if name not in ACTIVATIONS:
        raise ConfigError(f"no polynomial approximation for {name!r}; known: {sorted(ACTIVATIONS)}")
    if not hi > lo or degree < 1:
        raise ConfigError(f"need lo < hi and degree >= 1, got [{lo}, {hi}], {degree}")
    f = ACTIVATIONS[name]
    mid, half = (hi + lo) / 2.0, (hi - lo) / 2.0
    if name == "square":
        coeffs = C.poly2cheb([mid * mid, 2 * mid * half, half * half])
    else:
        coeffs = C.chebinterpolate(lambda t: f(mid + half * t), degree)  # type: ignore[arg-type,return-value]
    grid = np.linspace(lo, hi, 2001)
    poly = ChebPoly(name, tuple(float(c) for c in coeffs), mid, half, 0.0)
    err = float(np.max(np.abs(poly(grid) - f(grid))))
    return ChebPoly(name, poly.coeffs, mid, half, err)


# --------------------------------------------------------------------------- planning
def _giants(deg: int, k: int) -> list[int]:
    g, out = k, []
    while g <= deg:
        out.append(g)
        g *= 2
    return out


def _power_depths(deg: int, k: int) -> dict[int, int]:
    """Depth of each T_j we compute (baby 1..k-1 and giants)."""
    d = {1: 0}
    for j in range(2, max(k, 2)):
        d[j] = math.ceil(math.log2(j))
    for g in _giants(deg, k):
        d[g] = math.ceil(math.log2(g))
    return d


def plan_depth(deg: int, k: int) -> tuple[int, int]:
    """(depth, ciphertext products) of evaluating a degree-``deg`` series with baby size k."""
    pd = _power_depths(deg, k)
    products = sum(1 for j in pd if j > 1)

    def rec(n: int) -> tuple[int, int]:
        if n < k:
            return (max((pd[j] for j in range(1, n + 1)), default=-1) + 1, 0)
        g = max(x for x in _giants(n, k))
        dq, pq = rec(n - g)
        dr, pr = rec(g - 1)
        return max(max(dq, pd[g]) + 1, dr), pq + pr + 1

    depth, mults = rec(deg)
    return max(depth, 1), products + mults


def best_baby(deg: int) -> int:
    """The baby size (a power of two) with the least depth, then fewest products."""
    best = None
    k = 2
    while k <= max(2, 2 * deg):
        d, m = plan_depth(deg, k)
        if best is None or (d, m) < best[:2]:
            best = (d, m, k)
        k *= 2
    assert best is not None
    return best[2]


# --------------------------------------------------------------------------- evaluation
def evaluate_poly(ev: Any, t: Any, coeffs: np.ndarray, baby: int | None = None) -> Any:
    """Σ coeffs[j] T_j(t) for a ciphertext ``t`` (slots hold values in [-1, 1]).

    Args:
        ev: a :class:`veil.crypto.ckks.Evaluator`.
        t: the ciphertext.
        coeffs: Chebyshev coefficients (degree ≥ 1).
        baby: baby-step size; default :func:`best_baby`.
    """
    coeffs = np.trim_zeros(np.asarray(coeffs, dtype=np.float64), "b")
    deg = len(coeffs) - 1
    if deg < 1:
        raise ConfigError("evaluate_poly needs degree >= 1")
    k = baby or best_baby(deg)
    T: dict[int, Any] = {1: t}

    def power(j: int) -> Any:
        if j in T:
            return T[j]
        if j % 2 == 0:  # T_2n = 2 T_n^2 - 1
            h = power(j // 2)
            r = ev.add_plain(ev.double(ev.square(h)), -1.0)
        else:  # T_{a+b} = 2 T_a T_b - T_{a-b}, a = 2^ceil(log2 j) / 2
            a = 1 << (math.ceil(math.log2(j)) - 1)
            b = j - a
            r = ev.sub(ev.double(ev.multiply(power(a), power(b))), power(a - b))
        T[j] = r
        return r

    def trim(c: np.ndarray) -> np.ndarray:
        c = np.trim_zeros(np.where(np.abs(c) > _TINY, c, 0.0), "b")
        return c if len(c) else np.zeros(1)

    def split(c: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        g = max(_giants(len(c) - 1, k))
        basis = np.zeros(g + 1)
        basis[g] = 1.0
        q, r = C.chebdiv(c, basis)
        return g, trim(q), trim(r)

    # Exact scales (Bossuat et al. §4.2, "scale-invariant" evaluation): every sub-result is
    # asked for the scale that makes the sums it feeds exact. A sum's terms then never meet at
    # one level with different scales, whatever scale ``t`` or the powers T_j drifted to
    # (each ciphertext product gives Δ_a·Δ_b/q, and those drifts compound with the degree).
    def level_of(c: np.ndarray) -> int | None:
        """The level rec(c) lands on; None where it is a constant."""
        if len(c) - 1 < k:
            used = [ev.level(power(j)) for j in range(1, len(c)) if abs(c[j]) > _TINY]
            return min(used) - 1 if used else None
        g, q, r = split(c)
        lq, lr = level_of(q), level_of(r)
        lp = ev.level(power(g)) if lq is None else min(lq, ev.level(power(g)))
        return lp - 1 if lr is None else min(lp - 1, lr)

    def baby_sum(c: np.ndarray, scale: float) -> Any:
        terms = [ev.mul_plain(power(j), float(c[j]), target_scale=scale)
                 for j in range(1, len(c)) if abs(c[j]) > _TINY]
        if not terms:
            return float(c[0])  # a constant: the caller folds it in
        acc = ev.add_many(terms)
        return ev.add_plain(acc, float(c[0])) if abs(c[0]) > _TINY else acc

    def rec(c: np.ndarray, scale: float) -> Any:
        """Σ c_j T_j at exactly ``scale`` (or a float where c is a constant)."""
        if len(c) - 1 < k:
            return baby_sum(c, scale)
        g, q, r = split(c)
        tg = power(g)
        lq = level_of(q)
        if lq is None:
            prod = ev.mul_plain(tg, float(q[0]), target_scale=scale)
        else:
            at = min(lq, ev.level(tg))  # the product happens here and drops this prime
            qe = rec(q, scale * ev.prime(at) / tg.scale)
            prod = ev.multiply(qe, tg)  # scale qe.scale·tg.scale/prime = ``scale``
        re = rec(r, scale)
        if isinstance(re, float):
            return ev.add_plain(prod, re) if abs(re) > _TINY else prod
        return ev.add(prod, re)

    out = rec(trim(coeffs), float(t.scale))
    if isinstance(out, float):
        raise ConfigError("polynomial is constant on ciphertexts")
    return out
