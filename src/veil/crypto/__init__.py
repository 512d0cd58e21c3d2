"""Thin wrappers on ``cryptography`` and the arithmetic helpers the protocols need.

* :mod:`veil.crypto.prg` — AES-CTR PRG and :class:`SecureRng`.
* :mod:`veil.crypto.ka` — X25519 key agreement + HKDF.
* :mod:`veil.crypto.aead` — AES-GCM bound to (purpose, round, sender, receiver).
* :mod:`veil.crypto.shamir` — t-of-n Shamir sharing over GF(2**256 + 297).
* :mod:`veil.crypto.ring` — Z_{2^b} vectors, packing and PRG expansion.
"""

from veil.crypto.aead import bind, check_mac, mac, open_sealed, seal
from veil.crypto.ka import KeyPair, agree
from veil.crypto.prg import SecureRng, derive_key, derive_keys, prg_bytes, prg_uint32, prg_uint64
from veil.crypto.ring import PrgBuffer, pack, prg_ring, reduce, ring_dtype, to_signed, unpack
from veil.crypto.shamir import PRIME, combine, split

__all__ = [
    "SecureRng",
    "prg_bytes",
    "prg_uint64",
    "prg_uint32",
    "derive_key",
    "derive_keys",
    "KeyPair",
    "agree",
    "seal",
    "open_sealed",
    "bind",
    "mac",
    "check_mac",
    "PRIME",
    "split",
    "combine",
    "pack",
    "unpack",
    "prg_ring",
    "PrgBuffer",
    "reduce",
    "ring_dtype",
    "to_signed",
]
