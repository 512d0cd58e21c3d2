"""X25519 key agreement followed by HKDF-SHA256 (domain-separated shared keys).

A party holds a :class:`KeyPair`; two parties that exchange public keys derive the same
32-byte key with :func:`agree`, bound to a ``label`` (protocol, round, purpose) so that keys
for different purposes or rounds are independent. The private key never appears in
``repr``/``str``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from veil.crypto.prg import derive_key
from veil.errors import IntegrityError, LocalError, MalformedMessageError

__all__ = ["KeyPair", "agree", "PUBLIC_KEY_BYTES", "PRIVATE_KEY_BYTES"]

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32


class KeyPair:
    """An X25519 key pair. ``public`` is the 32-byte raw public key.

    Use :meth:`generate` for a fresh pair (OS randomness) or :meth:`from_private_bytes`
    to rebuild one from a reconstructed secret.
    """

    __slots__ = ("_sk", "public")

    def __init__(self, sk: X25519PrivateKey) -> None:
        self._sk = sk
        self.public: bytes = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key pair from the OS CSPRNG."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        """Rebuild a key pair from 32 raw private-key bytes.

        Raises:
            LocalError: if ``raw`` is not 32 bytes.
        """
        if not isinstance(raw, bytes | bytearray) or len(raw) != PRIVATE_KEY_BYTES:
            raise LocalError("an X25519 private key is 32 bytes")
        return cls(X25519PrivateKey.from_private_bytes(bytes(raw)))

    def private_bytes(self) -> bytes:
        """The raw private key (32 bytes). Handle as a secret: share it, never log it."""
        return self._sk.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def exchange(self, peer_public: bytes) -> bytes:
        """Raw X25519 shared secret with ``peer_public``.

        Raises:
            MalformedMessageError: if ``peer_public`` is not 32 bytes.
            IntegrityError: if the peer key is a low-order point (all-zero shared secret).
        """
        if not isinstance(peer_public, bytes | bytearray) or len(peer_public) != PUBLIC_KEY_BYTES:
            raise MalformedMessageError("an X25519 public key is 32 bytes")
        try:
            return self._sk.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public)))
        except ValueError as exc:  # low-order point → all-zero secret
            raise IntegrityError("peer public key is invalid (low-order point)") from exc

    def accepts(self, peer_public: bytes) -> bool:
        """Whether ``peer_public`` is a usable X25519 public key (32 bytes, not a low-order
        point): a key agreement with it does not give the all-zero secret."""
        try:
            self.exchange(peer_public)
        except (MalformedMessageError, IntegrityError):
            return False
        return True

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public[:4].hex()}…)"

    __str__ = __repr__

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("KeyPair cannot be pickled")


def agree(own: KeyPair, peer_public: bytes, label: str, length: int = 32) -> bytes:
    """Shared key = HKDF-SHA256(X25519(own, peer), info=label).

    Both parties get the same key whatever the order of the pair, provided they use the
    same ``label``.

    Args:
        own: this party's key pair.
        peer_public: the peer's 32-byte raw public key.
        label: domain separation (protocol, round, purpose).
        length: output length in bytes.

    Raises:
        MalformedMessageError: if the peer key has the wrong length.
        IntegrityError: if the peer key is a low-order point.
    """
    return derive_key(own.exchange(peer_public), label, length)
