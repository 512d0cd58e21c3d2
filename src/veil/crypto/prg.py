"""AES-CTR as a pseudo-random generator, and privacy randomness built on it.

Everything that protects privacy (masks, DP noise, secret shares) draws from
:class:`SecureRng`: an AES-256-CTR keystream from ``cryptography``. Its key is either fresh
from the OS (:meth:`SecureRng.fresh`, the default for real runs) or derived with HKDF from a
seed and a label (:meth:`SecureRng.from_seed`, for reproducible tests and simulations; a
run that uses it says so in its record). The key is never logged or exposed.
"""

from __future__ import annotations

import hmac
import os

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.errors import LocalError

__all__ = ["SecureRng", "prg_bytes", "prg_uint64", "prg_uint32", "derive_key", "derive_keys"]

_ZERO_NONCE = b"\x00" * 16


_HASH_BYTES = 32
_NO_SALT = b"\x00" * _HASH_BYTES


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869 §2.3) with HMAC-SHA256."""
    if not 1 <= length <= 255 * _HASH_BYTES:
        raise LocalError(f"HKDF output length must be in 1..{255 * _HASH_BYTES}, got {length}")
    out, block = b"", b""
    for i in range(1, -(-length // _HASH_BYTES) + 1):
        block = hmac.digest(prk, block + info + bytes((i,)), "sha256")
        out += block
    return out[:length]


def derive_key(secret: bytes, label: str, length: int = 32) -> bytes:
    """HKDF-SHA256 of ``secret`` bound to ``label`` (domain separation), no salt.

    The same bytes as ``cryptography``'s ``HKDF(SHA256(), length, salt=None, info=label)``,
    computed with two C-level HMAC calls instead of building a KDF object per key.

    Raises:
        LocalError: if ``length`` is outside 1..8160.
    """
    return derive_keys(secret, (label,), length)[0]


def derive_keys(
    secret: bytes, labels: tuple[str, ...] | list[str], length: int = 32
) -> list[bytes]:
    """HKDF-SHA256 keys for several labels from one secret (one Extract, one Expand each).

    ``derive_keys(s, (a, b)) == [derive_key(s, a), derive_key(s, b)]``.

    Raises:
        LocalError: if ``length`` is outside 1..8160.
    """
    prk = hmac.digest(_NO_SALT, bytes(secret), "sha256")  # HKDF-Extract, salt = 0^HashLen
    return [_hkdf_expand(prk, label.encode(), length) for label in labels]


def hkdf_reference(secret: bytes, label: str, length: int = 32) -> bytes:
    """``cryptography``'s HKDF-SHA256 (no salt): the reference :func:`derive_key` matches."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode()).derive(
        secret
    )


def prg_bytes(seed: bytes, n: int) -> bytes:
    """Expand a 32-byte (or 16-byte) seed into ``n`` pseudo-random bytes with AES-CTR."""
    if len(seed) not in (16, 32):
        raise LocalError("PRG seed must be 16 or 32 bytes")
    enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_NONCE)).encryptor()
    return enc.update(bytes(n))


def prg_uint64(seed: bytes, n: int) -> np.ndarray:
    """Expand ``seed`` into ``n`` uniformly random 64-bit words (little endian)."""
    return np.frombuffer(prg_bytes(seed, 8 * n), dtype="<u8")


def prg_uint32(seed: bytes, n: int) -> np.ndarray:
    """Expand ``seed`` into ``n`` uniformly random 32-bit words (little endian): the first
    ``4n`` bytes of the same AES-CTR keystream as :func:`prg_uint64`."""
    return np.frombuffer(prg_bytes(seed, 4 * n), dtype="<u4")


class SecureRng:
    """A CSPRNG stream (AES-256-CTR) with numpy-friendly samplers.

    Not picklable on purpose: derive a fresh stream per round/site with
    :meth:`from_seed` (reproducible) or :meth:`fresh` (secure) instead of storing one.
    """

    __slots__ = ("_enc", "reproducible")

    def __init__(self, key: bytes, *, reproducible: bool) -> None:
        if len(key) != 32:
            raise LocalError("SecureRng key must be 32 bytes")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(_ZERO_NONCE)).encryptor()
        self.reproducible = reproducible

    @classmethod
    def fresh(cls) -> SecureRng:
        """A stream keyed from the OS CSPRNG (use for real runs)."""
        return cls(os.urandom(32), reproducible=False)

    @classmethod
    def from_seed(cls, seed: int | bytes, label: str) -> SecureRng:
        """A reproducible stream keyed by HKDF(seed, label). For tests and simulations."""
        raw = seed if isinstance(seed, bytes) else int(seed).to_bytes(16, "little", signed=True)
        return cls(derive_key(raw, "veil/rng/" + label), reproducible=True)

    def __repr__(self) -> str:  # never show key material
        return f"SecureRng(reproducible={self.reproducible})"

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("SecureRng cannot be pickled; derive a new stream instead")

    def bytes(self, n: int) -> bytes:
        """``n`` random bytes."""
        return self._enc.update(bytes(n))

    def uint64(self, shape: int | tuple[int, ...]) -> np.ndarray:
        """Uniform 64-bit words."""
        n = int(np.prod(shape))
        return np.frombuffer(self.bytes(8 * n), dtype="<u8").reshape(shape)

    def uniform(self, shape: int | tuple[int, ...]) -> np.ndarray:
        """Uniform floats in the open interval (0, 1), 53 bits of randomness each."""
        u = (self.uint64(shape) >> np.uint64(11)).astype(np.float64)
        return (u + 0.5) * (1.0 / (1 << 53))

    def normal(self, shape: int | tuple[int, ...], std: float = 1.0) -> np.ndarray:
        """Gaussian samples N(0, std²) by the Box–Muller transform on CSPRNG uniforms."""
        n = int(np.prod(shape))
        m = (n + 1) // 2
        u1 = self.uniform(m)
        u2 = self.uniform(m)
        r = np.sqrt(-2.0 * np.log(u1))
        z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]
        return (z * std).reshape(shape)

    def integers(self, high: int, shape: int | tuple[int, ...]) -> np.ndarray:
        """Uniform integers in ``[0, high)`` without modulo bias (rejection sampling)."""
        if high <= 0:
            raise LocalError("high must be positive")
        n = int(np.prod(shape))
        if high & (high - 1) == 0:  # power of two: mask
            return (self.uint64(n) & np.uint64(high - 1)).reshape(shape)
        limit = (1 << 64) - ((1 << 64) % high)
        out = np.empty(0, dtype=np.uint64)
        while out.size < n:
            w = self.uint64(max(16, 2 * (n - out.size)))
            w = w[w < np.uint64(limit)] if limit < (1 << 64) else w
            out = np.concatenate([out, w % np.uint64(high)])
        return out[:n].reshape(shape)

    def bernoulli(self, p: np.ndarray | float, shape: int | tuple[int, ...]) -> np.ndarray:
        """Boolean samples that are True with probability ``p``."""
        return self.uniform(shape) < p
