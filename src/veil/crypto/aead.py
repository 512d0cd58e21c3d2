"""AES-256-GCM with associated data that binds a message to its context.

The associated data names the protocol, round, sender and receiver, so a ciphertext
replayed into another round, re-attributed to another sender or redirected to another
receiver fails to open (:class:`~veil.errors.IntegrityError`), as does any bit flip.
Nonces are 96 random bits (the key of a pair is used for a handful of messages).
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from veil.errors import IntegrityError, LocalError

__all__ = [
    "seal", "open_sealed", "bind", "mac", "check_mac", "NONCE_BYTES", "TAG_BYTES", "overhead"
]

NONCE_BYTES = 12
TAG_BYTES = 16


def overhead() -> int:
    """Bytes a sealed message adds to its plaintext (nonce + tag)."""
    return NONCE_BYTES + TAG_BYTES


def bind(purpose: str, round: int, sender: int, receiver: int) -> bytes:
    """Associated data for ``purpose`` in ``round`` from ``sender`` to ``receiver``."""
    return purpose.encode() + b"\x00" + struct.pack("<QII", round, sender, receiver)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != 32:
        raise LocalError("AES-GCM key must be 32 bytes")


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """Encrypt and authenticate: returns ``nonce || ciphertext || tag``.

    Raises:
        LocalError: if the key is not 32 bytes.
    """
    _check_key(key)
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, blob: bytes, associated: bytes) -> bytes:
    """Decrypt ``blob`` made by :func:`seal` with the same key and associated data.

    Raises:
        IntegrityError: if the blob is too short, was tampered with, or was made for
            another context (round, sender, receiver, purpose).
        LocalError: if the key is not 32 bytes.
    """
    _check_key(key)
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise IntegrityError("sealed message too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated)
    except InvalidTag as exc:
        raise IntegrityError(
            "authenticated decryption failed: tampered, replayed or misdirected ciphertext"
        ) from exc


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 tag (32 bytes) of ``data`` under a 32-byte key.

    Raises:
        LocalError: if the key is not 32 bytes.
    """
    from cryptography.hazmat.primitives import hashes, hmac

    _check_key(key)
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def check_mac(key: bytes, data: bytes, tag: bytes) -> None:
    """Verify an HMAC-SHA256 tag in constant time.

    Raises:
        IntegrityError: if the tag does not match.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, hmac

    _check_key(key)
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    try:
        h.verify(tag)
    except InvalidSignature as exc:
        raise IntegrityError("message authentication tag does not match") from exc
