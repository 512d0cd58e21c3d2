"""One compute party's arithmetic on replicated shares over Z_2^64 (ABY3-style, semi-honest).

All three parties run the same sequence of calls (SPMD); each call that needs the network
does exactly one :meth:`PartyNet.exchange` per communication round. Shares are uint64
(wrapping); nothing is cast to float. Notation: party ``i`` holds ``(x_i, x_{i+1})``.

Protocols (numbered steps; rounds in brackets):

* **mul / matmul** [1]: (1) ``z_i = x_i y_i + x_i y_{i+1} + x_{i+1} y_i + α_i`` locally,
  with ``α`` a PRG zero sharing (for matmul the products are matrix products, computed as
  ``x_i (y_i + y_{i+1}) + x_{i+1} y_i``); (2) party ``i`` sends ``z_i`` to party ``i − 1``
  and now holds ``(z_i, z_{i+1})``.
* **truncation by f bits** [2], fused with the product: the 3-of-3 sum ``z`` (``|z| < 2^62``)
  is opened to parties 0 and 1 under a mask ``r`` that party 2 draws uniformly from
  Z_2^64 with its own CSPRNG. (1) P2 sends ``z_2 + r`` to P0 and P1, and to P1 also its
  shares ``ρ_B = (r >> f) − ρ_A`` and ``β_B = msb(r) − β_A (mod 2^f)`` where ``ρ_A, β_A``
  come from the key P0 and P2 share; P0 and P1 swap ``z_0``, ``z_1``. Both compute
  ``c = z + 2^62 + r`` and ``m = msb(c)``. Because ``0 ≤ z + 2^62 < 2^63``, the mask wrapped
  exactly when ``msb(r) = 1`` and ``m = 0``, so
  ``(c >> f) − (r >> f) + 2^(64−f)·(1 − m)·msb(r) = ⌊(z + 2^62)/2^f⌋ + ε``, ``ε ∈ {0, 1}``
  (``ε = 1`` when the low ``f`` bits of ``c`` are below those of ``r``).
  P0 and P1 evaluate that on their additive shares. (2) They re-share the result
  into replicated form with masks from their keys with P2 (P0 sends ``y_A − y_0`` to P1,
  P1 sends ``y_B − y_2`` to P0). Result: ``⌊z / 2^f⌋ + ε`` — exact to one unit in the last
  place, with failure probability 0 whenever ``|z| < 2^62``; no silent wrap. P0 and P1
  each see ``z + r`` (uniform), the other's masked 3-of-3 share (uniform) and uniformly
  masked correlated randomness; P2 receives nothing.
* **open** [1]: party ``i`` sends ``x_{i+1}`` to party ``i − 1``.
* **AND on bit-packed words** [1]: the boolean version of mul (XOR, AND, XOR zero sharing).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np

from veil.crypto.prg import SecureRng
from veil.crypto.replicated import PairStreams, Share
from veil.errors import LocalError
from veil.securecompute.mpc.net import PartyNet

__all__ = ["Engine"]

_U64 = np.dtype(np.uint64)
_OFFSET_BITS = 62


class Engine:
    """Party ``i``'s share arithmetic (``i`` = ``net.index``).

    Args:
        net: the party's framed, counted link to the other two parties.
        streams: the party's two component-key streams.
        rng: the party's own CSPRNG (masks only it draws).
        frac_bits: fixed-point fraction bits ``f``.
    """

    def __init__(self, net: PartyNet, streams: PairStreams, rng: SecureRng, frac_bits: int) -> None:
        if net.index not in (0, 1, 2) or streams.party != net.index:
            raise LocalError("an Engine runs on compute party 0, 1 or 2")
        self.net = net
        self.streams = streams
        self.rng = rng
        self.f = int(frac_bits)
        self.i = net.index
        self.prev = (self.i - 1) % 3
        self.next = (self.i + 1) % 3

    def __repr__(self) -> str:
        return f"Engine(party={self.i}, f={self.f})"

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("an Engine holds keys and cannot be pickled")

    @contextmanager
    def op(self, label: str) -> Any:
        """Count rounds and bytes of the enclosed calls under ``label`` (not nested)."""
        old, self.net.op = self.net.op, label
        try:
            yield
        finally:
            self.net.op = old

    # ---------------------------------------------------------------- local, no traffic
    def constant(self, c: np.ndarray) -> Share:
        """A sharing of the public uint64 value ``c`` (component 0 = c)."""
        c = np.asarray(c, dtype=np.uint64)
        zero = np.zeros_like(c)
        return Share(c if self.i == 0 else zero, c if self.i == 2 else zero.copy())

    def component(self, j: int, a: np.ndarray, b: np.ndarray) -> Share:
        """Sharing whose only non-zero component ``j`` equals this party's ``a``/``b``
        (whichever of its two slots is component ``j``)."""
        return Share(
            a if self.i == j else np.zeros_like(a), b if self.next == j else np.zeros_like(b)
        )

    def add_public(self, x: Share, c: np.ndarray) -> Share:
        c = np.asarray(c, dtype=np.uint64)
        a = x.a + c if self.i == 0 else x.a + np.zeros_like(c)
        b = x.b + c if self.i == 2 else x.b + np.zeros_like(c)
        return Share(a, b)

    def xor_public(self, x: Share, c: np.generic | np.ndarray) -> Share:
        """XOR a public word into a boolean sharing (component 0)."""
        return Share(x.a ^ c if self.i == 0 else x.a, x.b ^ c if self.i == 2 else x.b)

    @staticmethod
    def add(x: Share, y: Share) -> Share:
        return Share(x.a + y.a, x.b + y.b)

    @staticmethod
    def sub(x: Share, y: Share) -> Share:
        return Share(x.a - y.a, x.b - y.b)

    @staticmethod
    def scale(x: Share, k: np.ndarray | int) -> Share:
        """Multiply by a public integer (uint64 two's complement), no truncation."""
        if np.ndim(k):
            k = np.asarray(k).astype(np.int64).view(np.uint64)
        else:
            k = np.uint64(int(k) % (1 << 64))
        return Share(x.a * k, x.b * k)

    def zero(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.streams.zero(shape)

    # ------------------------------------------------------------------ products
    def mul_local(self, x: Share, y: Share) -> np.ndarray:
        """This party's 3-of-3 share of ``x·y`` (elementwise, broadcasting), zero-masked."""
        z = x.a * (y.a + y.b) + x.b * y.a
        return z + self.zero(z.shape)

    def matmul_local(self, x: Share, y: Share) -> np.ndarray:
        """This party's 3-of-3 share of ``x @ y``, zero-masked."""
        z = np.matmul(x.a, y.a + y.b) + np.matmul(x.b, y.a)
        return z + self.zero(z.shape)

    def reshare(self, z: np.ndarray) -> Share:
        """3-of-3 additive → replicated [1 round]: send ``z_i`` to party ``i − 1``."""
        got = self.net.exchange({self.prev: [z]}, {self.next: [(z.shape, _U64)]})
        return Share(z, got[self.next][0])

    def mul(self, x: Share, y: Share) -> Share:
        """``x·y`` without truncation (integer × anything) [1 round]."""
        return self.reshare(self.mul_local(x, y))

    def mul_trunc(self, x: Share, y: Share) -> Share:
        """Fixed-point ``x·y`` [2 rounds]."""
        return self.trunc3(self.mul_local(x, y))

    def matmul(self, x: Share, y: Share) -> Share:
        """``x @ y`` without truncation [1 round]."""
        return self.reshare(self.matmul_local(x, y))

    def matmul_trunc(self, x: Share, y: Share) -> Share:
        """Fixed-point ``x @ y`` [2 rounds]."""
        return self.trunc3(self.matmul_local(x, y))

    def trunc(self, x: Share) -> Share:
        """Divide a replicated fixed-point value by ``2^f`` [2 rounds]."""
        return self.trunc3(x.a + self.zero(x.shape))

    def trunc3(self, z: np.ndarray, bits: int | None = None) -> Share:
        """Truncate the 3-of-3 additive sharing ``z`` by ``bits`` (default ``f``, at most
        32) into a replicated sharing (the protocol in the module docstring) [2 rounds]."""
        f, shape = (self.f if bits is None else int(bits)), z.shape
        if not 1 <= f <= 32:
            raise LocalError(f"truncation by {f} bits is not supported (1..32)")
        spec = (shape, _U64)
        bdt = np.dtype(np.uint16) if f <= 16 else np.dtype(np.uint32)
        fmask = np.uint64((1 << f) - 1)
        st = self.streams
        if self.i == 2:
            r = self.rng.uint64(shape)
            rho_a, beta_a = st.draw(0, "trunc", shape), st.draw(0, "trunc", shape)
            rho_b = (r >> np.uint64(f)) - rho_a
            beta_b = (((r >> np.uint64(63)) - beta_a) & fmask).astype(bdt)
            masked = z + r
            self.net.exchange({0: [masked], 1: [masked, rho_b, beta_b]}, {})
            return Share(st.draw(2, "trunc2", shape), st.draw(0, "trunc2", shape))
        big = np.uint64(1 << (64 - f))
        offset = np.uint64(1 << _OFFSET_BITS)
        if self.i == 0:
            rho, beta = st.draw(0, "trunc", shape), st.draw(0, "trunc", shape)
            got = self.net.exchange({1: [z]}, {2: [spec], 1: [spec]})
            c = z + got[1][0] + got[2][0] + offset
            y = (c >> np.uint64(f)) - np.uint64(1 << (_OFFSET_BITS - f)) - rho
        else:
            got = self.net.exchange({0: [z]}, {2: [spec, spec, (shape, bdt)], 0: [spec]})
            masked, rho_b, beta_b = got[2]
            c = z + got[0][0] + masked + offset
            rho, beta = rho_b, beta_b.astype(np.uint64)
            y = np.uint64(0) - rho
        y = y + big * (np.uint64(1) - (c >> np.uint64(63))) * beta
        if self.i == 0:
            y0 = st.draw(0, "trunc2", shape)
            got = self.net.exchange({1: [y - y0]}, {1: [spec]})
            return Share(y0, y - y0 + got[1][0])
        y2 = st.draw(2, "trunc2", shape)
        got = self.net.exchange({0: [y - y2]}, {0: [spec]})
        return Share(y - y2 + got[0][0], y2)

    # ---------------------------------------------------------------- boolean (packed)
    def and_(self, x: Share, y: Share) -> Share:
        """Bitwise AND of boolean shares (packed words) [1 round]."""
        z = (x.a & y.a) ^ (x.a & y.b) ^ (x.b & y.a)
        z ^= self.streams.zero(z.shape, z.dtype, xor=True)
        got = self.net.exchange({self.prev: [z]}, {self.next: [(z.shape, z.dtype)]})
        return Share(z, got[self.next][0])

    # ---------------------------------------------------------------------- opening
    def open(self, x: Share) -> np.ndarray:
        """Reveal ``x`` to all three parties [1 round] (only for values that are public by
        design, e.g. in tests)."""
        got = self.net.exchange({self.prev: [x.b]}, {self.next: [(x.shape, x.dtype)]})
        return x.a + x.b + got[self.next][0]

    def open_bool(self, x: Share) -> np.ndarray:
        """Reveal XOR-shared words to all three parties [1 round]."""
        got = self.net.exchange({self.prev: [x.b]}, {self.next: [(x.shape, x.dtype)]})
        return x.a ^ x.b ^ got[self.next][0]
