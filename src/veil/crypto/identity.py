"""Long-term site identities (Ed25519 via ``cryptography``) and the roster that pins them.

Each site holds a :class:`SiteIdentity` — an Ed25519 signing key created once
(``veil identity new``) and kept on the site. Its public key is enrolled out of band into
a :class:`Roster`: a JSON file mapping site ids to public keys, identified by its SHA-256
:meth:`Roster.digest` which every party pins (``veil identity roster-verify`` prints it).
SecAgg+ in the malicious-server model signs key advertisements and survivor lists with
these keys, so a server cannot substitute keys, invent sites (Sybils) or show sites
different views without being caught.

Files: ``site-<id>.key`` (PKCS#8 PEM, mode 0600) and ``site-<id>.pub`` (hex). The private
key never appears in a repr, and identities refuse to be pickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from veil.errors import ConfigError, IntegrityError

__all__ = [
    "SiteIdentity",
    "Roster",
    "verify",
    "sha256",
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
]

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_ROSTER_VERSION = 1


def sha256(*parts: bytes) -> bytes:
    """SHA-256 of the length-prefixed concatenation of ``parts`` (unambiguous framing)."""
    h = hashes.Hash(hashes.SHA256())
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.finalize()


class SiteIdentity:
    """A site's long-term Ed25519 signing key.

    Args:
        site_id: the site's id in the federation.
        key: its private key (use :meth:`generate` or :meth:`load`).
    """

    __slots__ = ("site_id", "_sk", "public")

    def __init__(self, site_id: int, key: Ed25519PrivateKey) -> None:
        self.site_id = int(site_id)
        self._sk = key
        self.public: bytes = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls, site_id: int) -> SiteIdentity:
        """A fresh identity from the OS CSPRNG."""
        return cls(site_id, Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) of ``message``."""
        return self._sk.sign(message)

    def save(self, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``site-<id>.key`` (mode 0600) and ``site-<id>.pub`` under ``directory``.

        Raises:
            ConfigError: if the key file already exists (identities are never overwritten).
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        key, pub = d / f"site-{self.site_id}.key", d / f"site-{self.site_id}.pub"
        try:
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise ConfigError(f"{key} exists; an identity is never overwritten") from exc
        with os.fdopen(fd, "wb") as f:
            f.write(self._sk.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ))
        pub.write_text(f"{self.site_id} {self.public.hex()}\n")
        return key, pub

    @classmethod
    def load(cls, site_id: int, path: str | os.PathLike[str]) -> SiteIdentity:
        """Read a key written by :meth:`save`.

        Raises:
            ConfigError: missing file or not an Ed25519 private key.
        """
        try:
            sk = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read an identity key from {path}") from exc
        if not isinstance(sk, Ed25519PrivateKey):
            raise ConfigError(f"{path} is not an Ed25519 key")
        return cls(site_id, sk)

    def __repr__(self) -> str:
        return f"SiteIdentity(site={self.site_id}, public={self.public[:4].hex()}…)"

    __str__ = __repr__

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("SiteIdentity holds a signing key and cannot be pickled")


def verify(public: bytes, message: bytes, signature: bytes, who: object = None) -> None:
    """Check an Ed25519 signature.

    Raises:
        IntegrityError: bad signature, or a malformed key/signature (names ``who``).
    """
    if len(signature) != SIGNATURE_BYTES or len(public) != PUBLIC_KEY_BYTES:
        raise IntegrityError("malformed signature or public key", peer=who)
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise IntegrityError("invalid signature", peer=who) from exc


def _check_public(site: int, public: bytes) -> None:
    if len(public) != PUBLIC_KEY_BYTES:
        raise ConfigError(f"site {site}: an Ed25519 public key is 32 bytes")
    try:
        Ed25519PublicKey.from_public_bytes(public)
    except ValueError as exc:
        raise ConfigError(f"site {site}: not a valid Ed25519 public key") from exc


@dataclass(frozen=True)
class Roster:
    """The enrolled sites: id → Ed25519 public key, pinned by :meth:`digest`.

    Attributes:
        federation: a name for the federation (bound into the digest).
        keys: site id → 32-byte public key.

    Raises:
        ConfigError: ids outside 0..2**32−2, malformed or repeated keys.
    """

    federation: str
    keys: Mapping[int, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        keys = {int(k): bytes(v) for k, v in self.keys.items()}
        for site, pub in keys.items():
            if not 0 <= site < 0xFFFFFFFF:
                raise ConfigError(f"site id {site} outside 0..2**32-2")
            _check_public(site, pub)
        if len(set(keys.values())) != len(keys):
            raise ConfigError("two sites share one public key (copied identity)")
        object.__setattr__(self, "keys", dict(sorted(keys.items())))

    @classmethod
    def of(cls, federation: str, identities: Iterable[SiteIdentity]) -> Roster:
        """The roster of some identities (for simulations that hold them all)."""
        return cls(federation, {i.site_id: i.public for i in identities})

    def __repr__(self) -> str:
        short = self.digest().hex()[:16]
        return f"Roster({self.federation!r}, {len(self.keys)} sites, digest={short}…)"

    def __contains__(self, site: object) -> bool:
        return site in self.keys

    def key_of(self, site: int) -> bytes:
        """Public key of ``site``.

        Raises:
            IntegrityError: if the site is not enrolled (a Sybil).
        """
        try:
            return self.keys[site]
        except KeyError:
            raise IntegrityError("site is not in the roster", peer=site) from None

    def digest(self) -> bytes:
        """SHA-256 over the federation name and every (id, key): what parties pin."""
        return sha256(
            b"veil/roster/v1", self.federation.encode(),
            *(site.to_bytes(4, "little") + pub for site, pub in self.keys.items()),
        )

    def to_json(self) -> str:
        """The roster file's text."""
        return json.dumps({
            "version": _ROSTER_VERSION, "federation": self.federation,
            "sites": {str(s): k.hex() for s, k in self.keys.items()},
            "digest": self.digest().hex(),
        }, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, pinned_digest: str | None = None) -> Roster:
        """Parse a roster file; check its recorded digest (and ``pinned_digest`` if given).

        Raises:
            ConfigError: unreadable or malformed file.
            IntegrityError: the digest does not match (the file was altered).
        """
        try:
            raw = json.loads(text)
            if raw.get("version") != _ROSTER_VERSION:
                raise ConfigError(f"roster version {raw.get('version')!r}, expected 1")
            roster = cls(str(raw["federation"]),
                         {int(s): bytes.fromhex(k) for s, k in raw["sites"].items()})
            recorded = str(raw["digest"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"malformed roster file: {exc}") from exc
        got = roster.digest().hex()
        if got != recorded:
            raise IntegrityError("roster digest does not match its contents (altered file)")
        if pinned_digest is not None and got != pinned_digest.lower():
            raise IntegrityError("roster is not the pinned one (digest differs)")
        return roster

    @classmethod
    def from_public_files(
        cls, federation: str, paths: Iterable[str | os.PathLike[str]]
    ) -> Roster:
        """Build a roster from ``site-<id>.pub`` files (``"<id> <hex key>"``).

        Raises:
            ConfigError: unreadable/malformed files or a site listed twice.
        """
        keys: dict[int, bytes] = {}
        for p in paths:
            try:
                site_s, hexkey = Path(p).read_text().split()
                site, key = int(site_s), bytes.fromhex(hexkey)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{p}: expected '<site id> <hex public key>'") from exc
            if site in keys:
                raise ConfigError(f"site {site} is listed twice")
            keys[site] = key
        return cls(federation, keys)

