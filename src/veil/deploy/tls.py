"""Certificates for a Flower deployment: a CA and the SuperLink's TLS server certificate.

Flower's SuperNodes (and ``flwr``) verify the SuperLink's certificate against a CA file
and check the host name they dial, so the server certificate must name that host in its
subject alternative names (DNS names and/or IP addresses). The CA comes from
:func:`veil.crypto.certs.make_ca` (ECDSA P-256: every TLS stack Flower uses accepts it);
the host-named server certificate from :func:`veil.crypto.certs.issue_host`.

Files written by :func:`write_superlink_certs`: ``ca.crt`` (give it to every site),
``superlink.crt`` and ``superlink.key`` (mode 0600; keep them on the SuperLink machine).
"""

from __future__ import annotations

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
    from veil.crypto.certs import issue_host, make_ca, write_certificate, write_pem

    if not hosts:
        raise ConfigError("name at least one host the sites will dial", key="--host")
    if days < 1:
        raise ConfigError("certificate validity must be at least one day", key="--days")
    d = Path(directory)
    ca = make_ca("veil-deploy-ca", days=days, kind="p256")
    server = issue_host(ca, list(hosts), days=days, kind="p256")
    ca_path = write_certificate(ca.cert, d / "ca.crt")  # the CA key is never written
    crt, key = write_pem(server, d)
    crt_path, key_path = crt.replace(d / "superlink.crt"), key.replace(d / "superlink.key")
    return ca_path, crt_path, key_path
