"""Certificates for a Flower deployment: a CA and the SuperLink's TLS server certificate.

Flower's SuperNodes (and ``flwr``) verify the SuperLink's certificate against a CA file
and check the host name they dial, so the server certificate must name that host in its
subject alternative names (DNS names and/or IP addresses). The CA comes from
:func:`veil.crypto.certs.make_ca` (ECDSA P-256: every TLS stack Flower uses accepts it);
the host-named server certificate is built here with ``cryptography``'s x509 builder,
because :func:`veil.crypto.certs.issue` names parties, not hosts.

Files written by :func:`write_superlink_certs`: ``ca.crt`` (give it to every site),
``superlink.crt`` and ``superlink.key`` (mode 0600; keep them on the SuperLink machine).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from veil.errors import ConfigError

__all__ = ["write_superlink_certs"]


def write_superlink_certs(
    directory: str | os.PathLike[str], hosts: Sequence[str], days: int = 365
) -> tuple[Path, Path, Path]:
    """Write a fresh CA and a SuperLink certificate valid for ``hosts``.

    Args:
        directory: where the PEM files go (created).
        hosts: DNS names and/or IP addresses the sites use to reach the SuperLink.
        days: validity.

    Returns:
        ``(ca.crt, superlink.crt, superlink.key)`` paths.

    Raises:
        ConfigError: no hosts, or a validity under one day.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from veil.crypto.certs import make_ca

    if not hosts:
        raise ConfigError("name at least one host the sites will dial", key="--host")
    if days < 1:
        raise ConfigError("certificate validity must be at least one day", key="--days")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca = make_ca("veil-deploy-ca", days=days, kind="p256")
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(hosts[0]))]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    ca_path, crt_path, key_path = d / "ca.crt", d / "superlink.crt", d / "superlink.key"
    ca_path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return ca_path, crt_path, key_path
