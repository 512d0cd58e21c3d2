"""A CA, party certificates, PEM files: names bound, wrong CA refused, keys never shown."""

from __future__ import annotations

import os

import pytest

from veil.crypto import certs
from veil.errors import ConfigError, IntegrityError


@pytest.mark.parametrize("kind", ["ed25519", "p256"])
def test_issue_verify_and_round_trip_pem(tmp_path, kind) -> None:
    ca = certs.make_ca("fed-ca", kind=kind)
    party = certs.issue(ca, "site-3", kind=kind)
    assert certs.party_name(party.cert) == "site-3" and party.name == "site-3"
    certs.verify_issued(party.cert, ca.cert)
    crt, key = certs.write_pem(party, tmp_path)
    assert os.stat(key).st_mode & 0o077 == 0
    back = certs.read_pem(crt, key)
    assert back.cert == party.cert
    assert "PRIVATE" not in repr(back) and "key=" not in repr(back)


def test_certificate_from_another_ca_is_refused(tmp_path) -> None:
    ca, rogue = certs.make_ca("fed-ca"), certs.make_ca("fed-ca")  # same name, other key
    forged = certs.issue(rogue, "site-1")
    with pytest.raises(IntegrityError, match="invalid CA signature"):
        certs.verify_issued(forged.cert, ca.cert)


def test_bad_names_and_mismatched_key_files(tmp_path) -> None:
    ca = certs.make_ca()
    with pytest.raises(ConfigError):
        certs.issue(ca, "../etc/passwd")
    a, b = certs.issue(ca, "a"), certs.issue(ca, "b")
    crt_a, _ = certs.write_pem(a, tmp_path)
    _, key_b = certs.write_pem(b, tmp_path)
    with pytest.raises(ConfigError, match="not the key"):
        certs.read_pem(crt_a, key_b)
    with pytest.raises(ConfigError):
        certs.load_certificate(tmp_path / "missing.crt")


def test_issue_host_names_the_hosts_and_tls_checks_them(tmp_path):
    """A host certificate passes a client's host-name check for its hosts, fails for others."""
    import socket
    import ssl
    import threading

    from veil.crypto.certs import issue_host, make_ca, write_certificate, write_pem

    ca = make_ca("host-ca", kind="p256")
    crt, key = write_pem(issue_host(ca, ["127.0.0.1", "localhost"]), tmp_path)
    ca_file = write_certificate(ca.cert, tmp_path / "ca.crt")
    srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv.load_cert_chain(crt, key)

    def handshake(server_hostname: str) -> None:
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)

        def serve() -> None:
            s, _ = ls.accept()
            try:
                srv.wrap_socket(s, server_side=True).close()
            except (ssl.SSLError, OSError):
                s.close()

        th = threading.Thread(target=serve)
        th.start()
        try:
            cli = ssl.create_default_context(cafile=str(ca_file))
            sock = socket.create_connection(ls.getsockname(), timeout=5)
            cli.wrap_socket(sock, server_hostname=server_hostname).close()
        finally:
            th.join(5)
            ls.close()

    handshake("localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake("other.example")
    with pytest.raises(ConfigError):
        issue_host(ca, [])
