"""Vectors over the ring Z_{2^b} (1 ≤ b ≤ 64) held in ``uint64`` numpy arrays.

Arithmetic wraps modulo 2**64 natively and is then masked to b bits, which is the same
as working modulo 2**b. :func:`pack`/:func:`unpack` give the b-bit wire form (exactly
``ceil(d·b/8)`` bytes); :func:`prg_ring` expands a seed into a uniform ring vector with
the AES-CTR PRG of :mod:`veil.crypto.prg`.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from veil.crypto.prg import prg_uint64
from veil.errors import LocalError, MalformedMessageError

__all__ = [
    "check_bits",
    "ring_mask",
    "reduce",
    "prg_ring",
    "to_signed",
    "pack",
    "unpack",
    "packed_size",
    "PrgBuffer",
]


def check_bits(bits: int) -> int:
    """Validate a ring width. Raises LocalError unless 1 ≤ bits ≤ 64."""
    if not isinstance(bits, int | np.integer) or not 1 <= int(bits) <= 64:
        raise LocalError(f"ring bits must be an integer in 1..64, got {bits!r}")
    return int(bits)


def ring_mask(bits: int) -> np.uint64:
    """The mask 2**bits − 1 as a uint64."""
    return np.uint64((1 << check_bits(bits)) - 1)


def reduce(x: np.ndarray, bits: int) -> np.ndarray:
    """Map an integer array (signed or unsigned) into Z_{2^b} as uint64 (two's complement)."""
    if not np.issubdtype(np.asarray(x).dtype, np.integer):
        raise LocalError("ring vectors must be integer arrays")
    return np.asarray(x).astype(np.uint64, copy=False) & ring_mask(bits)


def prg_ring(seed: bytes, d: int, bits: int) -> np.ndarray:
    """``d`` uniform elements of Z_{2^b}: the AES-CTR expansion of ``seed``, masked."""
    return prg_uint64(seed, d) & ring_mask(bits)


class PrgBuffer:
    """Reusable buffer for AES-CTR expansions of length ``d`` (64-bit words).

    ``fill(seed)`` returns exactly ``prg_uint64(seed, d)`` but writes it into one
    preallocated buffer (``update_into``), so expanding many seeds of the same length
    allocates nothing. The returned view is overwritten by the next ``fill``.
    """

    __slots__ = ("_zero", "_buf", "words")

    def __init__(self, d: int) -> None:
        if d < 1:
            raise LocalError("PrgBuffer length must be positive")
        self._zero = bytes(8 * d)
        self._buf = np.empty(8 * d + 16, dtype=np.uint8)  # update_into needs + block − 1
        self.words = self._buf[: 8 * d].view("<u8")

    def fill(self, seed: bytes) -> np.ndarray:
        """Expand ``seed`` (16 or 32 bytes) into the buffer and return the words.

        Raises:
            LocalError: if the seed length is wrong.
        """
        if len(seed) not in (16, 32):
            raise LocalError("PRG seed must be 16 or 32 bytes")
        enc = Cipher(algorithms.AES(seed), modes.CTR(b"\x00" * 16)).encryptor()
        enc.update_into(self._zero, self._buf)
        return self.words

    def __repr__(self) -> str:
        return f"PrgBuffer(d={self.words.shape[0]})"


def to_signed(x: np.ndarray, bits: int) -> np.ndarray:
    """Centred representative in [−2**(b−1), 2**(b−1)) as int64."""
    b = check_bits(bits)
    x = reduce(x, b)
    if b == 64:
        return x.view(np.int64)
    half = np.uint64(1 << (b - 1))
    return x.astype(np.int64) - (x >= half).astype(np.int64) * (1 << b)


def packed_size(d: int, bits: int) -> int:
    """Bytes of a packed length-``d`` vector of b-bit elements."""
    return (d * check_bits(bits) + 7) // 8


def pack(x: np.ndarray, bits: int) -> bytes:
    """Pack ring elements on exactly b bits each (little endian)."""
    b = check_bits(bits)
    x = np.ascontiguousarray(reduce(x, b), dtype="<u8")
    if b in (8, 16, 32):
        return x.astype(f"<u{b // 8}").tobytes()
    if b % 8 == 0:
        return x.view(np.uint8).reshape(-1, 8)[:, : b // 8].tobytes()
    bitarr = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    return np.packbits(bitarr[:, :b].ravel(), bitorder="little").tobytes()


def unpack(buf: bytes, d: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`.

    Raises:
        MalformedMessageError: if ``buf`` does not have exactly the packed size.
    """
    b = check_bits(bits)
    if len(buf) != packed_size(d, b):
        raise MalformedMessageError(
            f"packed vector has {len(buf)} bytes, expected {packed_size(d, b)}"
        )
    if b in (8, 16, 32, 64):
        return np.frombuffer(buf, dtype=f"<u{b // 8}").astype(np.uint64)
    raw = np.frombuffer(buf, dtype=np.uint8)
    out = np.zeros((d, 8), dtype=np.uint8)
    if b % 8 == 0:
        out[:, : b // 8] = raw.reshape(d, b // 8)
    else:
        bitarr = np.unpackbits(raw, bitorder="little")[: d * b].reshape(d, b)
        out[:] = np.packbits(
            np.pad(bitarr, ((0, 0), (0, 64 - b))), axis=1, bitorder="little"
        )
    return out.view("<u8").ravel().astype(np.uint64, copy=False)
