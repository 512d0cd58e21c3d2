"""Secure comparison and what it gives: sign bits, ReLU, max, argmax (semi-honest 3PC).

**Sign bit** ``[x < 0]`` of an arithmetic sharing, in the reduced ring Z_2^n (valid when
``|x| < 2^(n−1)``; ``n = 64`` is always valid):

1. The three components ``x_0, x_1, x_2`` (mod 2^n) are each a boolean sharing with one
   non-zero component — no traffic. Words hold one element's ``n`` bits (bit-packed
   uint8/16/32/64).
2. Carry-save adder [1 round]: ``s = x_0 ⊕ x_1 ⊕ x_2``, ``c = maj(x_0, x_1, x_2) =
   ((x_0 ⊕ x_2) ∧ (x_1 ⊕ x_2)) ⊕ x_2``; now ``x = s + 2c``.
3. Generate/propagate [1 round]: ``g = s ∧ 2c``, ``p = s ⊕ 2c``.
4. Kogge–Stone carry prefix over bits ``0..n−2`` [⌈log2(n−1)⌉ rounds, two ANDs per level
   batched into one exchange]: ``g ← g ⊕ (p ∧ (g ≪ k))``, ``p ← p ∧ (p ≪ k)``.
5. ``msb(x) = p_{n−1} ⊕ g_{n−2}``.

**Bit × value** ``b·y`` for a boolean-shared bit ``b = b_0 ⊕ b_1 ⊕ b_2`` [2 rounds]:
(1) in one exchange ``[y·b_2]`` and ``[b_0·b_1]`` (products with one-component sharings),
``d = b_0 + b_1 − 2 b_0 b_1 = b_0 ⊕ b_1``; (2) ``b·y = y·b_2 + d·(y − 2 y b_2)``. With
``y = 1`` this is the bit-to-arithmetic conversion. Round (2) may be summed over several
products and fused with a truncation.

ReLU: ``x − [x<0]·x`` (sign + 2 rounds = 9 rounds for n = 32). ``max(a, b) = a + [a<b](b−a)``;
argmax/max over k entries: a tournament of ⌈log2 k⌉ such steps; max-pool the same over
windows. Ties go to the first entry (like numpy).
"""

from __future__ import annotations

import numpy as np

from veil.crypto.replicated import Share
from veil.errors import ConfigError
from veil.securecompute.mpc.engine import Engine

__all__ = [
    "sign_bit",
    "bit_mul_local",
    "bit_mul",
    "bit_to_arith",
    "relu",
    "max_argmax",
    "word_dtype",
]


def word_dtype(bits: int) -> np.dtype:
    """Narrowest unsigned word holding ``bits`` bits."""
    if not 2 <= bits <= 64:
        raise ConfigError(f"comparison ring must have 2..64 bits, got {bits}")
    for w in (8, 16, 32, 64):
        if bits <= w:
            return np.dtype(f"uint{w}")
    raise AssertionError  # unreachable


def sign_bit(eng: Engine, x: Share, bits: int = 64) -> Share:
    """Boolean sharing (bit 0 of packed words) of ``[x < 0]`` for ``|x| < 2^(bits−1)``
    [2 + ⌈log2(bits−1)⌉ rounds]."""
    dt = word_dtype(bits)
    mask = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(~np.uint64(0))
    xa = (x.a & mask).astype(dt)
    xb = (x.b & mask).astype(dt)
    comps = [eng.component(j, xa, xb) for j in range(3)]
    s = Share(comps[0].a ^ comps[1].a ^ comps[2].a, comps[0].b ^ comps[1].b ^ comps[2].b)
    c2 = comps[2]
    u = Share(comps[0].a ^ c2.a, comps[0].b ^ c2.b)
    v = Share(comps[1].a ^ c2.a, comps[1].b ^ c2.b)
    carry = eng.and_(u, v)
    carry = Share(carry.a ^ c2.a, carry.b ^ c2.b)
    one = dt.type(1)
    c = Share(carry.a << one, carry.b << one)
    g = eng.and_(s, c)
    p = Share(s.a ^ c.a, s.b ^ c.b)
    top = Share((p.a >> dt.type(bits - 1)) & one, (p.b >> dt.type(bits - 1)) & one)
    width, k = bits - 1, 1
    while k < width:
        kk = dt.type(k)
        if 2 * k < width:  # g and p both needed further: two ANDs in one exchange
            lhs = Share(np.stack([p.a, p.a]), np.stack([p.b, p.b]))
            rhs = Share(np.stack([g.a << kk, p.a << kk]), np.stack([g.b << kk, p.b << kk]))
            both = eng.and_(lhs, rhs)
            g = Share(g.a ^ both.a[0], g.b ^ both.b[0])
            p = Share(both.a[1], both.b[1])
        else:
            t = eng.and_(p, Share(g.a << kk, g.b << kk))
            g = Share(g.a ^ t.a, g.b ^ t.b)
        k *= 2
    sh = dt.type(bits - 2)
    return Share(top.a ^ ((g.a >> sh) & one), top.b ^ ((g.b >> sh) & one))


def _bit_parts(eng: Engine, bit: Share) -> tuple[Share, Share, Share]:
    """One-component arithmetic sharings of the bit's three boolean components."""
    a = (bit.a & bit.a.dtype.type(1)).astype(np.uint64)
    b = (bit.b & bit.b.dtype.type(1)).astype(np.uint64)
    return eng.component(0, a, b), eng.component(1, a, b), eng.component(2, a, b)


def bit_mul_local(eng: Engine, bit: Share, y: Share) -> np.ndarray:
    """3-of-3 share of ``bit·y`` after one exchange; finish with ``reshare`` or ``trunc3``
    (sum several first to save traffic). ``bit`` broadcasts against ``y``."""
    b0, b1, b2 = _bit_parts(eng, bit)
    shape = np.broadcast_shapes(bit.shape, y.shape)
    b2 = Share(np.broadcast_to(b2.a, shape), np.broadcast_to(b2.b, shape))
    both = eng.reshare(
        np.concatenate([eng.mul_local(y, b2).ravel(), eng.mul_local(b0, b1).ravel()])
    )
    n = int(np.prod(shape))
    ys2 = Share(both.a[:n].reshape(shape), both.b[:n].reshape(shape))
    p01 = Share(both.a[n:].reshape(bit.shape), both.b[n:].reshape(bit.shape))
    d = eng.sub(eng.add(b0, b1), eng.scale(p01, 2))
    yw = eng.sub(y, eng.scale(ys2, 2))
    d_b = Share(np.broadcast_to(d.a, shape), np.broadcast_to(d.b, shape))
    # b·y = y·b2 + d·(y − 2·y·b2); y·b2 is replicated: put its component into the 3-of-3 sum
    return eng.mul_local(d_b, yw) + ys2.a


def bit_mul(eng: Engine, bit: Share, y: Share) -> Share:
    """Arithmetic sharing of ``bit·y`` (no truncation needed) [2 rounds]."""
    return eng.reshare(bit_mul_local(eng, bit, y))


def bit_to_arith(eng: Engine, bit: Share) -> Share:
    """Arithmetic sharing (0/1 integers) of a boolean-shared bit [2 rounds]."""
    return bit_mul(eng, bit, eng.constant(np.ones(bit.shape, dtype=np.uint64)))


def relu(eng: Engine, x: Share, bits: int) -> Share:
    """``max(x, 0)`` for ``|x| < 2^(bits−1)`` (fixed point or integer)."""
    neg = sign_bit(eng, x, bits)
    return eng.sub(x, bit_mul(eng, neg, x))


def max_argmax(
    eng: Engine, x: Share, bits: int, with_index: bool = False
) -> tuple[Share, Share | None]:
    """Max (and the index of the first max, as an integer sharing) over the last axis."""
    vals = x
    k = x.shape[-1]
    idx = None
    if with_index:
        idx = eng.constant(np.broadcast_to(np.arange(k, dtype=np.uint64), x.shape).copy())
    while vals.shape[-1] > 1:
        m = vals.shape[-1] // 2
        a, b = vals[..., 0 : 2 * m : 2], vals[..., 1 : 2 * m : 2]  # neighbours: ties → first
        rest = vals[..., 2 * m :]
        less = sign_bit(eng, eng.sub(a, b), bits)  # a < b  -> take b
        diffs = [eng.sub(b, a)]
        if idx is not None:
            ia, ib = idx[..., 0 : 2 * m : 2], idx[..., 1 : 2 * m : 2]
            diffs.append(eng.sub(ib, ia))
        stacked = Share(np.stack([d.a for d in diffs]), np.stack([d.b for d in diffs]))
        lb = Share(less.a[None], less.b[None])
        moved = bit_mul(eng, lb, stacked)
        vals = _cat(eng.add(a, moved[0]), rest)
        if idx is not None:
            idx = _cat(eng.add(ia, moved[1]), idx[..., 2 * m :])
    return vals, idx


def _cat(x: Share, y: Share) -> Share:
    if y.shape[-1] == 0:
        return x
    return Share(np.concatenate([x.a, y.a], axis=-1), np.concatenate([x.b, y.b], axis=-1))
