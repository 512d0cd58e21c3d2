"""Non-linear functions as clamped piecewise low-degree polynomials, one batched comparison
per layer.

A :class:`Piecewise` approximation of ``g`` on ``[lo, hi]`` has breakpoints
``t_0 = lo < t_1 < … < t_K = hi``, one polynomial ``Q_j`` (degree ≤ 7, fitted by least
squares on Chebyshev points) per segment, and exact linear pieces ``L`` below ``lo`` and
``H`` above ``hi`` (the asymptotes: 0/1 for sigmoid, ±1 for tanh, 0/x for GELU, …).

Secure evaluation of ``y = g(x)`` [2⌈log2 d⌉ + sign + 3 rounds]:

1. Powers ``x² … x^d`` by fixed-point products, ⌈log2 d⌉ levels [2 rounds each].
2. All ``K + 1`` sign bits ``n_j = [x < t_j]`` of the layer in ONE batched comparison.
3. With ``R_{−1} = L, R_j = Q_j, R_K = H`` and ``D_j = R_j − R_{j−1}``:
   ``y = H − Σ_j n_j D_j`` (exactly ``R_j`` in segment ``j``). The ``D_j`` are local linear
   combinations of the powers with coefficients carrying ``f + 32`` fraction bits; the
   sum of bit products is formed in one exchange and fused with one truncation by 32
   bits [1 + 2 rounds].

The fits are computed on first use (cached), never at import. Stated ranges and measured
maximum errors (fit + fixed point, tested at the MPC level) are in ``SPECS``'s docstrings
and docs/private-inference.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from veil.crypto.replicated import Share
from veil.errors import ConfigError
from veil.securecompute.mpc.compare import bit_mul_local, sign_bit
from veil.securecompute.mpc.engine import Engine

__all__ = ["Piecewise", "piecewise", "evaluate_piecewise", "FUNCTIONS", "COEF_BITS"]

COEF_BITS = 32


@dataclass(frozen=True, eq=False)
class Piecewise:
    """Breakpoints, per-segment power-basis coefficients and the outer linear pieces."""

    name: str
    breaks: np.ndarray  # (K + 1,)
    coeffs: np.ndarray  # (K, degree + 1), coeffs[j, k] multiplies x**k
    low: tuple[float, float]  # L(x) = low[0] + low[1]·x below breaks[0]
    high: tuple[float, float]  # H(x) = high[0] + high[1]·x above breaks[-1]
    fit_error: float  # max |Q − g| on a dense grid inside the range

    @property
    def degree(self) -> int:
        return self.coeffs.shape[1] - 1

    def plain(self, x: np.ndarray) -> np.ndarray:
        """The approximation in float64 (what the MPC evaluation computes, up to rounding)."""
        x = np.asarray(x, dtype=np.float64)
        seg = np.clip(np.searchsorted(self.breaks, x, side="right") - 1, 0, len(self.coeffs) - 1)
        y = sum(self.coeffs[seg, k] * x**k for k in range(self.degree + 1))
        y = np.where(x < self.breaks[0], self.low[0] + self.low[1] * x, y)
        return np.where(x >= self.breaks[-1], self.high[0] + self.high[1] * x, y)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


# name -> (function, lo, hi, low piece, high piece, degree, geometric breakpoints?)
FUNCTIONS = {
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), -8.0, 8.0, (0.0, 0.0), (1.0, 0.0), 7, False),
    "tanh": (np.tanh, -4.5, 4.5, (-1.0, 0.0), (1.0, 0.0), 7, False),
    "gelu": (_gelu, -4.0, 4.0, (0.0, 0.0), (0.0, 1.0), 7, False),
    "exp": (np.exp, -14.0, 0.0, (0.0, 0.0), (1.0, 0.0), 5, False),
    "reciprocal": (lambda x: 1 / x, 1.0, 128.0, (1.0, 0.0), (1 / 128, 0.0), 3, True),
}


@lru_cache(maxsize=None)
def piecewise(name: str, segments: int | None = None, target: float = 4e-4) -> Piecewise:
    """The fitted approximation of a named function (the fewest segments, up to 32, whose
    fit error is below ``target``, unless ``segments`` is given).

    Raises:
        ConfigError: unknown function name.
    """
    if name not in FUNCTIONS:
        raise ConfigError(f"no piecewise approximation for {name!r}; have {sorted(FUNCTIONS)}")
    g, lo, hi, low, high, deg, geometric = FUNCTIONS[name]
    best = None
    for k in [segments] if segments else range(2, 33):
        breaks = np.geomspace(lo, hi, k + 1) if geometric else np.linspace(lo, hi, k + 1)
        coeffs = np.zeros((k, deg + 1))
        err = 0.0
        for j in range(k):
            a, b = breaks[j], breaks[j + 1]
            t = np.cos(np.pi * (np.arange(64) + 0.5) / 64)
            xs = (a + b) / 2 + (b - a) / 2 * t
            coeffs[j] = np.polynomial.polynomial.polyfit(xs, g(xs), deg)
            grid = np.linspace(a, b, 400)
            approx = sum(coeffs[j, i] * grid**i for i in range(deg + 1))
            err = max(err, float(np.max(np.abs(approx - g(grid)))))
        best = Piecewise(name, breaks, coeffs, low, high, err)
        if err < target:
            break
    assert best is not None
    return best


def _powers(eng: Engine, x: Share, degree: int) -> list[Share]:
    """``[x, x², …, x^degree]`` in ⌈log2 degree⌉ product levels (2 rounds each): level ``k``
    multiplies ``x^(2^(k−1))`` by every power already known, all in one exchange."""
    powers = [x]
    while len(powers) < degree:
        top = powers[-1]  # x^m with m = len(powers), a power of two
        m = len(powers)
        want = min(m, degree - m)
        lhs = Share(np.stack([top.a] * want), np.stack([top.b] * want))
        rhs = Share(np.stack([p.a for p in powers[:want]]), np.stack([p.b for p in powers[:want]]))
        new = eng.mul_trunc(lhs, rhs)
        powers += [new[k] for k in range(want)]
    return powers


def evaluate_piecewise(eng: Engine, x: Share, pw: Piecewise, bits: int) -> Share:
    """Securely evaluate ``pw`` elementwise on fixed-point ``x`` (``|x| < 2^(bits−1−f)``)."""
    f = eng.f
    powers = _powers(eng, x, pw.degree)
    k = len(pw.coeffs)
    t = np.rint(pw.breaks * 2.0**f).astype(np.int64).view(np.uint64)
    shape = (k + 1,) + x.shape
    xs = Share(np.broadcast_to(x.a, shape), np.broadcast_to(x.b, shape))
    diff = eng.add_public(xs, (np.uint64(0) - t).reshape((-1,) + (1,) * x.ndim)
                          * np.ones(x.shape, dtype=np.uint64))
    below = sign_bit(eng, diff, bits)  # n_j = [x < t_j], all of the layer in one call
    # region functions at scale f + COEF_BITS: rows L, Q_0..Q_{K-1}, H
    cb = float(2.0**COEF_BITS)
    rows = np.zeros((k + 2, pw.degree + 1))
    rows[0, :2] = pw.low
    rows[1 : k + 1] = pw.coeffs
    rows[k + 1, :2] = pw.high
    # D_j = R_j − R_{j−1} from the ENCODED rows, so Σ_j D_j = H − L exactly: below the range
    # every n_j = 1 and the powers (which may have wrapped there) cancel to the integer
    enc_rows = np.rint(rows * cb).astype(np.int64)
    enc = (enc_rows[1:] - enc_rows[:-1]).view(np.uint64)  # (K+1, deg+1)
    expand = (slice(None),) + (None,) * x.ndim
    da = np.zeros(shape, dtype=np.uint64)
    db = np.zeros(shape, dtype=np.uint64)
    for p in range(1, pw.degree + 1):
        da += enc[:, p][expand] * powers[p - 1].a
        db += enc[:, p][expand] * powers[p - 1].b
    d = eng.add_public(Share(da, db), (enc[:, 0] << np.uint64(f))[expand]
                       * np.ones(x.shape, dtype=np.uint64))
    z = bit_mul_local(eng, below, d).sum(axis=0, dtype=np.uint64)
    h = enc_rows[k + 1, :2].view(np.uint64)
    h_share = eng.add_public(eng.scale(x, h[1]), np.full(x.shape, h[0] << np.uint64(f)))
    return eng.trunc3(h_share.a - z, COEF_BITS)
