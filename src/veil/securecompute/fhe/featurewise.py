"""Feature-major SIMD packing for batches: a ciphertext holds a few features of the WHOLE batch.

**Layout.** The batch is padded to ``seg`` slots (a power of two): a *segment*. A ciphertext of
S slots has ``k = S / seg`` segments; segment t of ciphertext c holds feature ``in_map[c][t]``
of every sample (slot ``t·seg + i`` = sample i), or zeros where ``in_map`` says -1. A batch of
b samples with n features costs ``⌈n / k⌉`` ciphertexts — not b — and a rotation by ``d·seg``
moves every sample's features by d segments at once, so the cost of a layer does not grow
with the batch (up to S samples; larger batches are split into chunks of S).

**Product** ``y = W x + b`` (m outputs). Outputs are grouped ``mp`` per ciphertext (``mp =
next_pow2(m)`` when m ≤ k/2 — one output ciphertext — else ``mp = k`` and ``⌈m/k⌉`` groups).
For group g, with the generalised diagonals over segments
``D_{c,d}[t] = W[o(g, t), in_map[c][(t + d) mod k]]`` (o(g, t) = g·mp + t mod mp)::

    z_g = Σ_{d<mp} Σ_c D_{c,d} ⊙ rot(x_c, d·seg)
        = Σ_G rot( Σ_{β<b} Σ_c rot(D_{c,Gb+β}, −G·b·seg) ⊙ rot(x_c, β·seg), G·b·seg )

(baby-step/giant-step: the baby rotations of each input ciphertext are shared by all groups),
then, for mp < k, ``log2(k/mp)`` rotate-and-add steps by ``mp·seg, 2mp·seg, …`` sum the
partial sums of all segments into each (the result is periodic: segment t holds output
t mod mp). One level (one rescale), or none where ``rescale=False`` (a circuit that is a single
dense map: the product stays at scale Δ·Δ_w and is decrypted there). All-zero diagonals
(padding) are skipped; every plaintext is encoded once per level and cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from veil.errors import ConfigError
from veil.securecompute.fhe.matvec import cheapest_pow2, next_pow2

__all__ = ["FeatureMap", "input_map", "pack_features", "unpack_features", "segment_for"]


def input_map(n_features: int, k: int) -> tuple[tuple[int, ...], ...]:
    """Feature index per (ciphertext, segment) for ``n_features`` inputs, k per ciphertext."""
    cts = max(1, -(-n_features // k))
    return tuple(tuple(c * k + t if c * k + t < n_features else -1 for t in range(k))
                 for c in range(cts))


def pack_features(x: np.ndarray, in_map: tuple[tuple[int, ...], ...], seg: int,
                  slots: int) -> list[np.ndarray]:
    """Slot vectors of one chunk (≤ ``seg`` samples) in feature-major layout."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) > seg:
        raise ConfigError(f"{len(x)} samples do not fit a segment of {seg} slots")
    out = []
    for row in in_map:
        v = np.zeros(slots)
        for t, f in enumerate(row):
            if f >= 0:
                v[t * seg : t * seg + len(x)] = x[:, f]
        out.append(v)
    return out


def unpack_features(vectors: list[np.ndarray], out_map: tuple[tuple[int, ...], ...], seg: int,
                    n_samples: int, n_out: int) -> np.ndarray:
    """(n_samples, n_out) outputs of one chunk from decrypted slot vectors."""
    y = np.zeros((n_samples, n_out))
    for vec, row in zip(vectors, out_map):
        for t, o in enumerate(row):
            if 0 <= o < n_out:
                y[:, o] = vec[t * seg : t * seg + n_samples]
    return y


@dataclass
class FeatureMap:
    """``y = W x + b`` on feature-major ciphertexts (see the module docstring).

    Args:
        weight: (m, n) matrix; column f multiplies feature f of ``in_map``.
        bias: (m,) vector.
        in_map: per input ciphertext, per segment, the feature it holds (-1: none).
        seg: slots per segment (the padded batch).
        slots: slots per ciphertext.
        rescale: drop a prime after the product (False: keep scale Δ·``weight_scale``).
        weight_scale: plaintext scale of the weights when ``rescale`` is False.
    """

    weight: np.ndarray
    bias: np.ndarray
    in_map: tuple[tuple[int, ...], ...]
    seg: int
    slots: int
    rescale: bool = True
    weight_scale: float = 0.0
    out_map: tuple[tuple[int, ...], ...] = field(init=False)
    _plain: dict[tuple[Any, ...], Any] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        s, seg = self.slots, self.seg
        if seg < 1 or seg & (seg - 1) or s % seg:
            raise ConfigError(f"bad feature-major layout: segment {seg}, slots {s}")
        k = self.k = s // seg
        m, n = self.weight.shape
        if any(len(r) != k for r in self.in_map) or max(max(r) for r in self.in_map) >= n:
            raise ConfigError("in_map does not match the segments or the weight's columns")
        if not self.rescale and self.weight_scale <= 0:
            raise ConfigError("rescale=False needs a positive weight_scale")
        self.mp = next_pow2(m) if m <= k // 2 else k
        self.groups = -(-m // self.mp)
        self.out_map = tuple(
            tuple(o if (o := g * self.mp + t % self.mp) < m and t < self.mp else -1
                  for t in range(k))
            for g in range(self.groups))
        cols = np.asarray(self.in_map)  # (C, k) feature per segment
        wpad = np.zeros((self.groups * self.mp + 1, n + 1))
        wpad[:m, :n] = self.weight  # index -1 (last row/column) reads zero
        t = np.arange(k)
        self._diag: dict[tuple[int, int, int], np.ndarray] = {}
        for g in range(self.groups):
            o = g * self.mp + t % self.mp
            o = np.where(o < m, o, -1)
            for c in range(len(cols)):
                for d in range(self.mp):
                    vals = wpad[o, cols[c][(t + d) % k]]
                    if np.any(vals != 0.0):
                        self._diag[(g, c, d)] = vals
        if not self._diag:
            raise ConfigError("an all-zero weight matrix has no encrypted product")
        self.baby = self._best_baby()
        self.fold = []
        f = self.mp
        while f < k:
            self.fold.append(f)
            f *= 2
        self._bias = []
        bpad = np.append(np.asarray(self.bias, dtype=np.float64), 0.0)
        for g in range(self.groups):
            o = g * self.mp + t % self.mp
            self._bias.append(np.repeat(bpad[np.where(o < m, o, -1)], seg))

    def _best_baby(self) -> int:
        if not self.rescale:  # rotate products only (see matvec.DenseMap._best_baby)
            return 1
        c = len(self.in_map)
        return cheapest_pow2(self.mp, lambda b: c * (b - 1) + self.groups * (-(-self.mp // b) - 1))

    @property
    def steps(self) -> list[int]:
        """Rotation steps (slots) this product needs Galois keys for."""
        b, seg = self.baby, self.seg
        babies = sorted({d % b for (_, _, d) in self._diag} - {0})
        giants = sorted({d // b for (_, _, d) in self._diag} - {0})
        return [x * seg for x in babies] + [x * b * seg for x in giants] + \
            [f * seg for f in self.fold]

    @property
    def rotations(self) -> int:
        """Rotations per chunk (all groups)."""
        b = self.baby
        babies = {(c, d % b) for (_, c, d) in self._diag if d % b}
        giants = {(g, d // b) for (g, _, d) in self._diag if d // b}
        return len(babies) + len(giants) + self.groups * len(self.fold)

    @property
    def products(self) -> int:
        """Plaintext products per chunk."""
        return len(self._diag)

    def _pt(self, ev: Any, key: tuple[int, int, int], like: Any) -> Any:
        pid = tuple(like.parms_id())
        pt = self._plain.get((key, pid))
        if pt is None:
            g, c, d = key
            shift = (d // self.baby) * self.baby * self.seg
            vec = np.roll(np.repeat(self._diag[key], self.seg), shift)  # rot(D, -G·b·seg)
            pt = ev.encode(vec, like, scale=None if self.rescale else self.weight_scale)
            self._plain[(key, pid)] = pt
        return pt

    def apply(self, ev: Any, xs: list[Any]) -> list[Any]:
        """The product on one chunk's input ciphertexts; one ciphertext per output group."""
        b, seg = self.baby, self.seg
        need = {(c, d % b) for (_, c, d) in self._diag}
        babies = {(c, r): (ev.rotate(xs[c], r * seg) if r else xs[c]) for c, r in sorted(need)}
        outs = []
        for g in range(self.groups):
            outer = []
            for gi in range(-(-self.mp // b)):
                terms = [ev.mul_plain(babies[(c, d % b)], self._pt(ev, (g, c, d), xs[c]),
                                      rescale=False)
                         for (gg, c, d) in self._diag if gg == g and d // b == gi]
                if terms:
                    inner = ev.add_many(terms)
                    outer.append(ev.rotate(inner, gi * b * seg) if gi else inner)
            z = ev.add_many(outer)
            if self.rescale:
                z = ev.rescale(z)
            for f in self.fold:
                z = ev.add(z, ev.rotate(z, f * seg))
            outs.append(ev.add_plain(z, self._bias[g]))
        return outs


def segment_for(batch: int, slots: int) -> int:
    """The segment (padded batch per chunk) for ``batch`` samples in ``slots`` slots."""
    return min(next_pow2(max(1, batch)), slots)
