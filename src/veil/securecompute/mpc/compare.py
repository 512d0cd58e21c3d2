"""Secure comparison and what it gives: sign bits, ReLU, max, argmax (semi-honest 3PC).

**Sign bit** ``[x < 0]`` of an arithmetic sharing, in the reduced ring Z_2^n (valid when
``|x| < 2^(n−1)``; ``n = 64`` is always valid):

1. The three components ``x_0, x_1, x_2`` (mod 2^n) are each a boolean sharing with one
   non-zero component — no traffic. Words hold one element's ``n`` bits (bit-packed
   uint8/16/32/64).
2. Carry-save adder [1 round]: ``s = x_0 ⊕ x_1 ⊕ x_2``, ``c = maj(x_0, x_1, x_2) =
   ((x_0 ⊕ x_2) ∧ (x_1 ⊕ x_2)) ⊕ x_2``; now ``x = s + 2c``.
3. Generate/propagate [1 round]: ``g = s ∧ 2c``, ``p = s ⊕ 2c``.
4. Carry-only parallel prefix over bits ``0..n−2`` [⌈log2(n−1)⌉ rounds, two ANDs per level
   batched into one exchange]: neighbouring groups combine, ``g' = g_odd ⊕ (p_odd ∧ g_even)``,
   ``p' = p_odd ∧ p_even``, and the results are packed into words of half the width (a
   local bit unshuffle), so level ``k`` sends ``(n−1)/2^k`` bits per element, not ``n``.
5. ``msb(x) = p_{n−1} ⊕ G``, ``G`` the generate of the whole group (the carry into n−1).

**Bit × value** ``b·y`` for a boolean-shared bit ``b = b_0 ⊕ b_1 ⊕ b_2`` [2 rounds]:
(1) in one exchange of three words per element, ``[d]`` for ``d = b_0 ⊕ b_1`` (P0 knows
both and inputs it) and ``[y·b_2]`` (P1 and P2 know ``b_2`` and re-share their local
products to P0 under masks from their common key); (2) ``b·y = y·b_2 + d·(y − 2 y b_2)``. With
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
    # carry into bit n−1 = group generate of bits 0..n−2, by a carry-only prefix tree:
    # each level pairs neighbouring groups and packs the results into half as many bits
    width = bits - 1
    while width > 1:
        lm = _low_mask(dt, width)  # components carry random bits above the value's width
        g, p = Share(g.a & lm, g.b & lm), Share(p.a & lm, p.b & lm)
        if width % 2:  # a virtual top group (g = 0, p = 1) for the unpaired one
            p = eng.xor_public(p, dt.type(1) << dt.type(width))
            width += 1
        half = width // 2
        ndt = word_dtype(max(half, 2))
        g_even, g_odd = _unzip(g, dt, ndt, width)
        p_even, p_odd = _unzip(p, dt, ndt, width)
        if half > 1:  # g and p both needed further: two ANDs in one exchange
            both = eng.and_(Share(np.stack([p_odd.a, p_odd.a]), np.stack([p_odd.b, p_odd.b])),
                            Share(np.stack([g_even.a, p_even.a]), np.stack([g_even.b, p_even.b])))
            g = Share(g_odd.a ^ both.a[0], g_odd.b ^ both.b[0])
            p = Share(both.a[1], both.b[1])
        else:
            t = eng.and_(p_odd, g_even)
            g = Share(g_odd.a ^ t.a, g_odd.b ^ t.b)
        dt, width = ndt, half
    one_g = dt.type(1)
    top = Share(top.a.astype(dt), top.b.astype(dt))
    return Share(top.a ^ (g.a & one_g), top.b ^ (g.b & one_g))


def _low_mask(dt: np.dtype, width: int) -> np.generic:
    return dt.type((1 << width) - 1) if width < 8 * dt.itemsize else dt.type(~dt.type(0))


_EVEN = [0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x00FF00FF00FF00FF,
         0x0000FFFF0000FFFF, 0x00000000FFFFFFFF]


def _compact_even(w: np.ndarray) -> np.ndarray:
    """Bits 0, 2, 4, … of each word moved to bits 0, 1, 2, … (a local bit unshuffle)."""
    dt = w.dtype
    nbits = 8 * dt.itemsize
    x = w & dt.type(_EVEN[0] & ((1 << nbits) - 1))
    shift, k = 1, 1
    while shift < nbits // 2:
        x = (x | (x >> dt.type(shift))) & dt.type(_EVEN[k] & ((1 << nbits) - 1))
        shift, k = shift * 2, k + 1
    return x


def _unzip(x: Share, dt: np.dtype, ndt: np.dtype, width: int) -> tuple[Share, Share]:
    """(even-indexed bits, odd-indexed bits) of the low ``width`` bits, packed into ``ndt``."""
    one = dt.type(1)
    ev = Share(_compact_even(x.a).astype(ndt), _compact_even(x.b).astype(ndt))
    od = Share(_compact_even(x.a >> one).astype(ndt), _compact_even(x.b >> one).astype(ndt))
    return ev, od


def _bit_round_one(eng: Engine, bit: Share, y: Share) -> tuple[Share, Share]:
    """``([d], [y·b_2])`` with ``d = b_0 ⊕ b_1`` in ONE exchange of 3 words per element:
    P0 holds ``b_0, b_1`` and inputs ``d`` (``d − F(K_0)`` to P1); P1 and P2 hold ``b_2``
    and compute ``(y_1 + y_2)·b_2`` and ``y_0·b_2``, which they re-share to P0 under masks
    from ``K_2`` (P1 sends ``A + s − w_2``, P2 sends ``B − s``)."""
    shape = np.broadcast_shapes(bit.shape, y.shape)
    i, st = eng.i, eng.streams
    one = bit.a.dtype.type(1)
    u64 = np.dtype(np.uint64)
    if i == 0:
        d = ((bit.a ^ bit.b) & one).astype(np.uint64)
        c0 = st.draw(0, "bitin", bit.shape)
        got = eng.net.exchange({1: [d - c0]}, {1: [(shape, u64)], 2: [(shape, u64)]})
        return Share(c0, d - c0), Share(got[2][0], got[1][0])
    w2 = st.draw(2, "bitw", shape)
    mask = st.draw(2, "bits", shape)
    if i == 1:
        b2 = np.broadcast_to((bit.b & one).astype(np.uint64), shape)
        w1 = (y.a + y.b) * b2 + mask - w2
        got = eng.net.exchange({0: [w1]}, {0: [(bit.shape, u64)]})
        return Share(got[0][0], np.zeros(bit.shape, np.uint64)), Share(w1, w2)
    b2 = np.broadcast_to((bit.a & one).astype(np.uint64), shape)
    w0 = y.b * b2 - mask
    eng.net.exchange({0: [w0]}, {})
    return Share(np.zeros(bit.shape, np.uint64), st.draw(0, "bitin", bit.shape)), Share(w2, w0)


def bit_mul_local(eng: Engine, bit: Share, y: Share) -> np.ndarray:
    """3-of-3 share of ``bit·y`` after one exchange; finish with ``reshare`` or ``trunc3``
    (sum several first to save traffic). ``bit`` broadcasts against ``y``."""
    shape = np.broadcast_shapes(bit.shape, y.shape)
    d, ys2 = _bit_round_one(eng, bit, y)
    yw = eng.sub(Share(np.broadcast_to(y.a, shape), np.broadcast_to(y.b, shape)),
                 eng.scale(ys2, 2))
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
