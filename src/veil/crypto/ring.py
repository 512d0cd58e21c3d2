"""Vectors over the ring Z_{2^b} (1 ≤ b ≤ 64) held in ``uint64`` numpy arrays.

Arithmetic wraps modulo 2**64 natively and is then masked to b bits, which is the same
as working modulo 2**b. For b ≤ 32 the hot paths may hold vectors in ``uint32``
(:func:`ring_dtype`): wrapping modulo 2**32 is again the same as working modulo 2**b, with
half the memory traffic and half the AES-CTR keystream per element.
:func:`pack`/:func:`unpack` give the b-bit wire form (exactly ``ceil(d·b/8)`` bytes);
:func:`prg_ring` expands a seed into a uniform ring vector with the AES-CTR PRG of
:mod:`veil.crypto.prg`.
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
    "ring_dtype",
]


def check_bits(bits: int) -> int:
    """Validate a ring width. Raises LocalError unless 1 ≤ bits ≤ 64."""
    if not isinstance(bits, int | np.integer) or not 1 <= int(bits) <= 64:
        raise LocalError(f"ring bits must be an integer in 1..64, got {bits!r}")
    return int(bits)


def ring_mask(bits: int) -> np.uint64:
    """The mask 2**bits − 1 as a uint64."""
    return np.uint64((1 << check_bits(bits)) - 1)


def ring_dtype(bits: int) -> type[np.unsignedinteger]:
    """The narrowest word that holds Z_{2^b} with native wrap-around: uint32 for b ≤ 32,
    else uint64."""
    return np.uint32 if check_bits(bits) <= 32 else np.uint64


def reduce(x: np.ndarray, bits: int) -> np.ndarray:
    """Map an integer array (signed or unsigned) into Z_{2^b} as uint64 (two's complement)."""
    if not np.issubdtype(np.asarray(x).dtype, np.integer):
        raise LocalError("ring vectors must be integer arrays")
    return np.asarray(x).astype(np.uint64, copy=False) & ring_mask(bits)


def prg_ring(seed: bytes, d: int, bits: int) -> np.ndarray:
    """``d`` uniform elements of Z_{2^b}: the AES-CTR expansion of ``seed``, masked."""
    return prg_uint64(seed, d) & ring_mask(bits)


class PrgBuffer:
    """Reusable buffer for AES-CTR expansions of length ``d`` words.

    ``fill(seed)`` returns exactly ``prg_uint64(seed, d)`` (``word_bytes=8``, the default)
    or ``prg_uint32(seed, d)`` (``word_bytes=4``) but writes it into one preallocated
    buffer (``update_into``), so expanding many seeds of the same length allocates
    nothing. The returned view is overwritten by the next ``fill``.

    Raises:
        LocalError: if ``d`` is not positive or ``word_bytes`` is not 4 or 8.
    """

    __slots__ = ("_zero", "_buf", "words")

    def __init__(self, d: int, word_bytes: int = 8) -> None:
        if d < 1:
            raise LocalError("PrgBuffer length must be positive")
        if word_bytes not in (4, 8):
            raise LocalError("PrgBuffer words are 4 or 8 bytes")
        size = word_bytes * d
        self._zero = bytes(size)
        self._buf = np.empty(size + 16, dtype=np.uint8)  # update_into needs + block − 1
        self.words = self._buf[:size].view(f"<u{word_bytes}")

    def fill(self, seed: bytes) -> np.ndarray:
        """Expand ``seed`` (16 or 32 bytes) into the buffer and return the words.

        Raises:
            LocalError: if the seed length is wrong.
        """
        if len(seed) not in (16, 32):
            raise LocalError("PRG seed must be 16 or 32 bytes")
        enc = Cipher(algorithms.AES(seed), modes.CTR(b"\x00" * 16)).encryptor()
        enc.update_into(self._zero, self._buf.data)  # .data: writable memoryview
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
    if b <= 32 and np.asarray(x).dtype == np.uint32:  # narrow fast path, no widening
        x32 = np.asarray(x) if b == 32 else np.asarray(x) & np.uint32((1 << b) - 1)
        if b in (8, 16, 32):
            return x32.astype(f"<u{b // 8}", copy=False).tobytes()
    x = np.ascontiguousarray(reduce(x, b), dtype="<u8")
    if b in (8, 16, 32):
        return x.astype(f"<u{b // 8}").tobytes()
    if b % 8 == 0:
        return x.view(np.uint8).reshape(-1, 8)[:, : b // 8].tobytes()
    bitarr = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    return np.packbits(bitarr[:, :b].ravel(), bitorder="little").tobytes()


def unpack(
    buf: bytes, d: int, bits: int, dtype: type[np.unsignedinteger] = np.uint64
) -> np.ndarray:
    """Inverse of :func:`pack`, as ``dtype`` (uint64, or uint32 when b ≤ 32).

    For b in (8, 16, 32) and a matching ``dtype`` the result may be a read-only view of
    ``buf`` (no copy).

    Raises:
        MalformedMessageError: if ``buf`` does not have exactly the packed size.
    """
    b = check_bits(bits)
    if len(buf) != packed_size(d, b):
        raise MalformedMessageError(
            f"packed vector has {len(buf)} bytes, expected {packed_size(d, b)}"
        )
    if dtype == np.uint32 and b > 32:
        raise LocalError("uint32 holds ring elements of at most 32 bits")
    if b in (8, 16, 32, 64):
        raw_words = np.frombuffer(buf, dtype=f"<u{b // 8}")
        return raw_words.astype(dtype, copy=dtype == np.uint64)  # uint64: always writable
    raw = np.frombuffer(buf, dtype=np.uint8)
    out = np.zeros((d, 8), dtype=np.uint8)
    if b % 8 == 0:
        out[:, : b // 8] = raw.reshape(d, b // 8)
    else:
        bitarr = np.unpackbits(raw, bitorder="little")[: d * b].reshape(d, b)
        out[:] = np.packbits(
            np.pad(bitarr, ((0, 0), (0, 64 - b))), axis=1, bitorder="little"
        )
    return out.view("<u8").ravel().astype(dtype, copy=False)
