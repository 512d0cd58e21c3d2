"""A small certificate authority for veil parties (x509 via ``cryptography``).

The federation (or the operator of a private-inference deployment) runs
:func:`make_ca` once, then :func:`issue` one certificate per party. A party certificate
names the party in its subject common name and in a ``URI:veil:party:<name>`` subject
alternative name, is signed by the CA, and carries a fresh key (Ed25519 by default,
or ECDSA P-256). The TLS transport (:mod:`veil.transport.tcp`) verifies each peer's chain
against the CA and checks that the certificate names the party it expected;
:func:`party_name` reads that name back.

Files are PEM: ``<name>.crt`` and ``<name>.key`` (the key unencrypted, mode 0600 — keep it
on the party's own machine). Keys never appear in reprs.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from veil.errors import ConfigError, IntegrityError

__all__ = [
    "CertKey",
    "make_ca",
    "issue",
    "issue_host",
    "party_name",
    "party_name_der",
    "verify_issued",
    "write_pem",
    "write_certificate",
    "read_pem",
    "load_certificate",
]

KeyKind = Literal["ed25519", "p256"]
_URI_PREFIX = "veil:party:"
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key.

    Attributes:
        cert: the x509 certificate.
        key: its private key (never shown in repr).
    """

    cert: x509.Certificate
    key: PrivateKey = field(repr=False)

    @property
    def name(self) -> str:
        """The party (or CA) name in the certificate's common name."""
        return _common_name(self.cert)

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("CertKey holds a private key and cannot be pickled")


def _new_key(kind: KeyKind) -> PrivateKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ConfigError(f"unknown key kind {kind!r}; use 'ed25519' or 'p256'")


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 64 or not all(
        c.isalnum() or c in "-_." for c in name
    ):
        raise ConfigError(f"party name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _builder(
    subject: x509.Name, issuer: x509.Name, key: PrivateKey, days: int
) -> x509.CertificateBuilder:
    if days < 1:
        raise ConfigError("certificate validity must be at least one day")
    now = _dt.datetime.now(_dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
    )


def make_ca(name: str = "veil-ca", days: int = 365, kind: KeyKind = "ed25519") -> CertKey:
    """A self-signed CA certificate (basic constraints CA, path length 0).

    Raises:
        ConfigError: on a bad name, key kind or validity.
    """
    _check_name(name)
    key = _new_key(kind)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, subject, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, _hash_for(key))
    )
    return CertKey(cert, key)


def issue(ca: CertKey, name: str, days: int = 365, kind: KeyKind = "ed25519") -> CertKey:
    """A party certificate for ``name`` signed by ``ca`` (TLS client and server use).

    Raises:
        ConfigError: on a bad name, key kind or validity.
    """
    _check_name(name)
    key = _new_key(kind)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, ca.cert.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(_URI_PREFIX + name)]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca.key, _hash_for(ca.key))
    )
    return CertKey(cert, key)


def issue_host(
    ca: CertKey, hosts: list[str] | tuple[str, ...], days: int = 365, kind: KeyKind = "p256"
) -> CertKey:
    """A TLS *server* certificate for hosts (DNS names or IP addresses) signed by ``ca``.

    For stacks that check the host they dial (e.g. Flower's SuperLink) rather than a veil
    party name. The common name is the first host.

    Raises:
        ConfigError: no hosts, a bad key kind or validity.
    """
    import ipaddress

    if not hosts:
        raise ConfigError("name at least one host the clients will dial", key="--host")
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    key = _new_key(kind)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(hosts[0]))])
    cert = (
        _builder(subject, ca.cert.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca.key, _hash_for(ca.key))
    )
    return CertKey(cert, key)


def party_name(cert: x509.Certificate) -> str:
    """The party a certificate was issued to (its ``veil:party:`` SAN, else its CN).

    Raises:
        IntegrityError: if the SAN and the common name disagree.
    """
    cn = _common_name(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return cn
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith(_URI_PREFIX)]
    if uris and (len(uris) != 1 or uris[0][len(_URI_PREFIX):] != cn):
        raise IntegrityError("certificate names two different parties")
    return cn


def party_name_der(der: bytes) -> str:
    """:func:`party_name` of a DER certificate (what a TLS socket reports for its peer).

    Raises:
        IntegrityError: the bytes are not a certificate, or it names no veil party.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise IntegrityError("peer certificate is not valid DER") from exc
    return party_name(cert)


def verify_issued(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """Check that ``cert`` was signed by ``ca_cert`` and is valid now.

    Raises:
        IntegrityError: bad signature, wrong issuer, or outside its validity period.
    """
    if cert.issuer != ca_cert.subject:
        raise IntegrityError(f"certificate of {_common_name(cert)!r} not issued by this CA")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise IntegrityError(
            f"certificate of {_common_name(cert)!r} has an invalid CA signature"
        ) from exc
    now = _dt.datetime.now(_dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise IntegrityError(f"certificate of {_common_name(cert)!r} is expired or not yet valid")


def write_pem(ck: CertKey, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``<name>.crt`` and ``<name>.key`` (mode 0600) under ``directory``.

    Returns:
        (certificate path, key path).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    crt, key = d / f"{ck.name}.crt", d / f"{ck.name}.key"
    write_certificate(ck.cert, crt)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            ck.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return crt, key


def write_certificate(cert: x509.Certificate, path: str | os.PathLike[str]) -> Path:
    """Write one certificate (public) as PEM to ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return p


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """Read one PEM certificate.

    Raises:
        ConfigError: if the file is missing or not a PEM certificate.
    """
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read a PEM certificate from {path}: {exc}") from exc


def read_pem(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> CertKey:
    """Read a certificate and its private key written by :func:`write_pem`.

    Raises:
        ConfigError: missing/unreadable files, or a key that does not match the certificate.
    """
    cert = load_certificate(cert_path)
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read a PEM private key from {key_path}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path}: only Ed25519 and ECDSA P-256 keys are supported")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        raise ConfigError(f"{key_path} is not the key of the certificate {cert_path}")
    return CertKey(cert, key)
