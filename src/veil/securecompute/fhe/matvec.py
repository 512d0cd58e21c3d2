"""Matrix–vector products on packed CKKS ciphertexts: Halevi–Shoup diagonals with
baby-step/giant-step rotations, for one sample per ciphertext or a SIMD batch.

**Layout.** A ciphertext holds ``slots / block`` samples, one per block of ``block`` slots; in
its block a sample's vector (length ``period``, a power of two, zero-padded) is repeated, so
the block is periodic. With one sample per ciphertext the block is the whole slot vector, and
cyclic rotation of the slots is cyclic rotation of the vector.

**Product.** For an ``m × n`` matrix W (both padded to powers of two, ``n`` = input period),
with D = min(m, n) diagonals ``d_i[j] = W[j mod m, (j + i) mod n]``::

    z = Σ_{i<D} d_i ⊙ rot(x, i)
      = Σ_g rot( Σ_k rot(d_{g·b+k}, −g·b) ⊙ rot(x, k), g·b )     (baby k < b, giant g)

costing (b − 1) + (⌈D/b⌉ − 1) rotations, b ≈ √D, and one rescale. If m < n the partial sums
are folded with log2(n/m) rotate-and-add steps (Juvekar et al., GAZELLE, "hybrid" method) and
the result has period m. In a batch (block < slots) a rotation can read the next sample's
block, so intermediate layers use D = n (m padded up to n), zero the diagonals outside
[0, m) of each block (free: folded into the plaintext) and re-replicate the result with
log2(block / m) rotate-and-add steps; the final layer only needs slots [0, m) of each block.
The caller must choose ``block ≥ max(m, n) + (largest non-zero diagonal index)`` for
batches (:func:`batch_block`); an elementwise map (diagonal 0 only) packs samples densely.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from veil.errors import ConfigError

__all__ = ["next_pow2", "DenseMap", "tile", "batch_block", "cheapest_pow2"]


def next_pow2(n: int) -> int:
    """Smallest power of two ≥ n (≥ 1)."""
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def cheapest_pow2(limit: int, cost: Callable[[int], int]) -> int:
    """The power of two b ≤ ``limit`` (at least 1) with the least ``cost(b)``, smallest on ties."""
    best, b = (cost(1), 1), 2
    while b <= limit:
        best = min(best, (cost(b), b))
        b *= 2
    return best[1]


def tile(vec: np.ndarray, period: int, block: int, slots: int) -> np.ndarray:
    """``vec`` zero-padded to ``period`` and repeated to fill every block of ``slots``."""
    v = np.zeros(period)
    v[: len(vec)] = vec
    return np.tile(v, slots // period)


def _nonzero_diagonals(w: np.ndarray, mp: int, n: int) -> list[int]:
    """Indices i < min(mp, n) of the generalised diagonals of the padded w that are non-zero."""
    length = max(mp, n)
    j = np.arange(length)
    return [i for i in range(min(mp, n)) if np.any(w[j % mp, (j + i) % n] != 0.0)]


def batch_block(weight: np.ndarray, period: int, final: bool) -> tuple[int, int]:
    """(slots one sample needs in a batched layout, output period) for ``weight``.

    A batched product reads slots j + i for j below the output length and i up to the
    largest non-zero diagonal, so a block must hold ``max(m, n) + max i`` slots.
    """
    m, n_in = weight.shape
    mp = next_pow2(m)
    if not final and mp < period:
        mp = period
    w = np.zeros((mp, period))
    w[:m, :n_in] = weight
    nz = _nonzero_diagonals(w, mp, period)
    return next_pow2(max(mp, period) + (max(nz) if nz else 0)), mp


@dataclass
class DenseMap:
    """y = W x + b on packed ciphertexts (see the module docstring).

    Args:
        weight: (out, in) matrix.
        bias: (out,) vector.
        period: input period n (power of two ≥ in).
        block: slots per sample (``slots`` for one sample per ciphertext).
        slots: slots per ciphertext.
        final: the last layer (its output is read only at slots [0, out) of each block).
        rescale: drop a prime after the product (False: the result keeps scale
            Δ·``weight_scale`` — a circuit that is this one map, decrypted without a rescale).
        weight_scale: plaintext scale of the diagonals when ``rescale`` is False.
    """

    weight: np.ndarray
    bias: np.ndarray
    period: int
    block: int
    slots: int
    final: bool = False
    rescale: bool = True
    weight_scale: float = 0.0
    out_period: int = field(init=False)
    _plain: dict[tuple[Any, ...], Any] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        m, n_in = self.weight.shape
        n = self.period
        if n_in > n or n & (n - 1) or self.block % n or self.slots % self.block:
            raise ConfigError(f"bad layout: in={n_in} period={n} block={self.block}")
        if not self.rescale and self.weight_scale <= 0:
            raise ConfigError("rescale=False needs a positive weight_scale")
        self.batched = self.block < self.slots
        mp = next_pow2(m)
        if self.batched and not self.final and mp < n:
            mp = n  # pad rows: no fold step, whose output would need a mask
        self.mp = mp
        self.out_period = mp
        self.ndiag = min(mp, n)
        length = max(mp, n)
        w = np.zeros((mp, n))
        w[:m, :n_in] = self.weight
        j = np.arange(length)
        diags = []
        for i in range(self.ndiag):
            d = w[j % mp, (j + i) % n]
            if self.batched:
                valid = np.zeros(self.block)
                valid[:length] = d
                if not self.final:
                    valid[mp:] = 0.0  # keep only slots [0, mp) of each block
                full = np.tile(valid, self.slots // self.block)
            else:
                full = np.tile(d, self.slots // length)
            diags.append(full)
        self.nonzero = [i for i in range(self.ndiag) if np.any(diags[i] != 0.0)]
        if not self.nonzero:
            raise ConfigError("an all-zero weight matrix has no encrypted product")
        if self.batched and self.block < length + max(self.nonzero):
            raise ConfigError(
                f"batched layout needs block >= {length + max(self.nonzero)}, got {self.block}"
            )
        self.baby = self._best_baby()
        self.giant = -(-self.ndiag // self.baby)
        # pre-rotate for the giant steps: rot(d, -g*b) == np.roll(d, g*b)
        self._diags = {i: np.roll(diags[i], (i // self.baby) * self.baby) for i in self.nonzero}
        self.fold_steps = []
        if mp < n:
            s = mp
            while s < n:
                self.fold_steps.append(s)
                s *= 2
        self.replicate_steps = []
        if self.batched and not self.final:
            s = mp
            while s < self.block:
                self.replicate_steps.append(-s)
                s *= 2
        bias = np.zeros(mp)
        bias[:m] = self.bias
        if self.batched:
            blk = np.zeros(self.block)
            blk[:mp] = bias
            if not self.final:
                blk = np.tile(bias, self.block // mp)
            self._bias = np.tile(blk, self.slots // self.block)
        else:
            self._bias = np.tile(bias, self.slots // mp)

    def _split(self, b: int) -> tuple[list[int], list[int]]:
        """Baby and giant indices used by the non-zero diagonals for baby size b."""
        ks = sorted({i % b for i in self.nonzero})
        gs = sorted({i // b for i in self.nonzero})
        return ks, gs

    def _best_baby(self) -> int:
        """The power-of-two baby size with the fewest rotations (zero diagonals skipped).

        Without a rescale the baby size is 1: every rotation then acts on products (scale
        Δ·Δ_w), where key switching's additive noise (~2^15 here) is negligible, not on the
        input at scale Δ."""
        if not self.rescale:
            return 1

        def cost(b: int) -> int:
            ks, gs = self._split(b)
            return sum(1 for k in ks if k) + sum(1 for g in gs if g)

        return cheapest_pow2(self.ndiag, cost)

    @property
    def steps(self) -> list[int]:
        """Rotation steps this product needs Galois keys for."""
        ks, gs = self._split(self.baby)
        st = [k for k in ks if k] + [g * self.baby for g in gs if g]
        return st + self.fold_steps + self.replicate_steps

    @property
    def rotations(self) -> int:
        """Rotations per ciphertext."""
        return len(self.steps)

    def _pt(self, ev: Any, i: int, like: Any) -> Any:
        key = (i, tuple(like.parms_id()))
        pt = self._plain.get(key)
        if pt is None:
            pt = ev.encode(self._diags[i], like,
                           scale=None if self.rescale else self.weight_scale)
            self._plain[key] = pt
        return pt

    @property
    def products(self) -> int:
        """Plaintext products per ciphertext."""
        return len(self.nonzero)

    def apply(self, ev: Any, x: Any) -> Any:
        """The product on one ciphertext (uses one level, none if ``rescale`` is False)."""
        ks, gs = self._split(self.baby)
        babies = {k: (ev.rotate(x, k) if k else x) for k in ks}
        outer = []
        for g in gs:
            terms = []
            for k in ks:
                i = g * self.baby + k
                if i not in self._diags:
                    continue
                terms.append(ev.mul_plain(babies[k], self._pt(ev, i, x), rescale=False))
            inner = ev.add_many(terms)
            outer.append(ev.rotate(inner, g * self.baby) if g else inner)
        z = ev.add_many(outer)
        if self.rescale:
            z = ev.rescale(z)
        for s in self.fold_steps:
            z = ev.add(z, ev.rotate(z, s))
        for s in self.replicate_steps:
            z = ev.add(z, ev.rotate(z, s))
        return ev.add_plain(z, self._bias)
