"""TCP with mutual TLS 1.3 between OS processes: :func:`connect_mesh` returns a :class:`Channel`.

Every party has a certificate from the deployment's CA naming it
(:mod:`veil.crypto.certs`) and listens on its own address. For each pair one persistent
connection is opened — the party whose name sorts first dials, the other accepts — and
both sides check the peer's certificate chain against the CA (``CERT_REQUIRED``, TLS 1.3
only) and that the certificate names the party expected on that link (a dialer checks the
name it dialled; an acceptor checks that the name is an expected peer not yet connected).
A certificate from another CA, for another party or for no party at all, ends the
handshake; nothing is read from an unauthenticated peer.

Messages are frames: a 4-byte big-endian length then the payload, at most
``max_frame_bytes`` (a larger incoming frame breaks that link with a
:class:`~veil.errors.PeerError`; a larger outgoing one is a :class:`~veil.errors.LocalError`).
Sockets use ``TCP_NODELAY``. One reader thread per link moves frames into the party's
:class:`~veil.transport.channel.Mailbox`; the TLS object of a link is only ever used under
its lock, with non-blocking I/O, so a send and the reader never run inside OpenSSL at once
and two parties sending large frames to each other cannot deadlock.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Mapping
from typing import Protocol

from veil.crypto.certs import party_name, party_name_der
from veil.errors import ConfigError, IntegrityError, LocalError, PeerError, PeerTimeoutError
from veil.transport.channel import Mailbox, check_payload

__all__ = ["connect_mesh", "TlsChannel", "tls_context", "DEFAULT_MAX_FRAME_BYTES"]

DEFAULT_MAX_FRAME_BYTES = 256 * 2**20
_LEN = struct.Struct(">I")
_CHUNK = 1 << 20
Address = tuple[str, int]


def tls_context(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    ca_path: str | os.PathLike[str],
    server_side: bool,
) -> ssl.SSLContext:
    """A TLS 1.3-only context that presents our certificate and requires the peer's.

    Raises:
        ConfigError: if the certificate, key or CA file cannot be loaded.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # party names are checked on the certificate itself
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
        ctx.load_verify_locations(os.fspath(ca_path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate/key/CA: {exc}") from exc
    return ctx


def _peer_name(sock: ssl.SSLSocket) -> str:
    der = sock.getpeercert(binary_form=True)
    if not der:
        raise IntegrityError("peer presented no certificate")
    return party_name_der(der)


class _Inbox(Protocol):
    """Where a :class:`_Link` delivers frames (a :class:`Mailbox`, or the star server's)."""

    owner: str

    def put(self, sender: str, payload: bytes) -> None: ...

    def fail(self, sender: str, why: str) -> None: ...


class _Link:
    """One authenticated TLS connection to one peer (non-blocking, used under a lock)."""

    def __init__(self, peer: str, sock: ssl.SSLSocket, box: _Inbox, max_frame: int) -> None:
        self.peer, self.sock, self.box, self.max_frame = peer, sock, box, max_frame
        self.lock = threading.Lock()  # guards every call into the TLS object
        self.wlock = threading.Lock()  # one frame at a time
        self.closed = False
        sock.setblocking(False)
        self.reader = threading.Thread(
            target=self._read_loop, daemon=True, name=f"veil-tls-{box.owner}<-{peer}"
        )
        self.reader.start()

    def _read_loop(self) -> None:
        buf = bytearray()
        try:
            while not self.closed:
                with self.lock:
                    data = self._recv_some()
                if data is None:  # nothing decrypted yet: wait for the socket
                    select.select([self.sock], [], [], 0.2)
                    continue
                if not data:
                    raise PeerError("connection closed", peer=self.peer)
                buf += data
                while len(buf) >= 4:
                    (n,) = _LEN.unpack_from(buf)
                    if n > self.max_frame:
                        raise PeerError(
                            f"frame of {n} bytes exceeds the limit {self.max_frame}", peer=self.peer
                        )
                    if len(buf) < 4 + n:
                        break
                    self.box.put(self.peer, bytes(buf[4 : 4 + n]))
                    del buf[: 4 + n]
        except PeerError as exc:
            self.box.fail(self.peer, str(exc))
        except (OSError, ssl.SSLError, ValueError) as exc:
            if not self.closed:
                self.box.fail(self.peer, f"connection broken ({type(exc).__name__})")
        finally:
            if not self.closed:
                self.shutdown()

    def _recv_some(self) -> bytes | None:
        """Everything decrypted now (b'' at EOF, None when the socket must be waited on)."""
        out = bytearray()
        try:
            while True:
                chunk = self.sock.recv(_CHUNK)
                if not chunk:
                    return bytes(out) if out else b""
                out += chunk
                if not self.sock.pending():
                    return bytes(out)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return bytes(out) if out else None

    def send(self, payload: bytes, deadline: float | None = None) -> None:
        """Send one frame; past ``deadline`` (monotonic) a half-sent frame closes the link."""
        if len(payload) > self.max_frame:
            raise LocalError(f"frame of {len(payload)} bytes exceeds the limit {self.max_frame}")
        view = memoryview(_LEN.pack(len(payload)) + payload)
        total = len(view)
        with self.wlock:
            while view:
                if self.closed:
                    raise PeerError("connection closed", peer=self.peer)
                if deadline is not None and time.monotonic() >= deadline:
                    if len(view) < total:  # a partial frame would desynchronise the stream
                        self.shutdown()
                    raise PeerTimeoutError("send not finished by the deadline", peer=self.peer)
                try:
                    with self.lock:
                        n = self.sock.send(view[:_CHUNK])
                    view = view[n:]
                    continue
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
                except (OSError, ssl.SSLError) as exc:
                    raise PeerError(f"connection broken ({type(exc).__name__})",
                                    peer=self.peer) from exc
                select.select([self.sock], [self.sock], [], 0.2)

    def shutdown(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:  # pragma: no cover - already gone
            pass


class TlsChannel:
    """A :class:`~veil.transport.channel.Channel` over one TLS link per peer.

    Build it with :func:`connect_mesh`.
    """

    def __init__(self, party_id: str, links: Mapping[str, _Link], box: Mailbox) -> None:
        self._id, self._links, self._box = party_id, dict(links), box

    @property
    def party_id(self) -> str:
        return self._id

    @property
    def peers(self) -> tuple[str, ...]:
        """The parties this channel is connected to."""
        return tuple(sorted(self._links))

    def __repr__(self) -> str:
        return f"TlsChannel({self._id!r}, peers={list(self.peers)})"

    def send(self, to: str, payload: bytes) -> None:
        data = check_payload(payload)
        if self._box.closed:
            raise LocalError(f"channel of {self._id} is closed")
        link = self._links.get(to)
        if link is None:
            raise LocalError(f"{self._id} has no channel to {to!r}")
        link.send(data)

    def recv(self, frm: str, timeout: float | None = None) -> bytes:
        return self._box.get(frm, timeout)

    def recv_any(self, timeout: float | None = None) -> tuple[str, bytes]:
        return self._box.get_any(timeout)

    def close(self) -> None:
        if self._box.closed:
            return
        self._box.close()
        for link in self._links.values():
            link.shutdown()
        for link in self._links.values():
            link.reader.join(timeout=1.0)


def _dial(addr: Address, peer: str, ctx: ssl.SSLContext, deadline: float) -> ssl.SSLSocket:
    last: BaseException | None = None
    while time.monotonic() < deadline:
        raw = None
        try:
            raw = socket.create_connection(addr, timeout=max(0.05, deadline - time.monotonic()))
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = ctx.wrap_socket(raw, server_hostname=None)
            name = _peer_name(tls)
            if name != peer:
                tls.close()
                raise IntegrityError(f"dialled {peer!r} at {addr} but its certificate names {name!r}")
            return tls
        except ssl.SSLError as exc:
            if raw is not None:
                raw.close()
            raise PeerError(f"TLS handshake failed: {exc.reason or exc}", peer=peer) from exc
        except OSError as exc:  # not listening yet: retry until the deadline
            if raw is not None:
                raw.close()
            last = exc
            time.sleep(0.02)
    raise PeerTimeoutError(f"could not connect to {addr} ({last})", peer=peer)


def connect_mesh(
    party_id: str,
    addresses: Mapping[str, Address],
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    ca_path: str | os.PathLike[str],
    connect_timeout_s: float = 30.0,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> TlsChannel:
    """Connect ``party_id`` to every other party in ``addresses`` over mutual TLS.

    Args:
        party_id: our name (must match our certificate and be a key of ``addresses``).
        addresses: party name → (host, port) where that party listens; list only the
            parties we talk to (a star for SecAgg sites, the full mesh for MPC).
        cert_path, key_path: our certificate and key (PEM, from :mod:`veil.crypto.certs`).
        ca_path: the CA certificate every peer's certificate must chain to.
        connect_timeout_s: give up if the mesh is not complete by then.
        max_frame_bytes: largest message accepted or sent.

    Returns:
        The channel, connected to every listed peer.

    Raises:
        ConfigError: we are not in ``addresses``, our certificate does not name us, or the
            files cannot be loaded.
        PeerTimeoutError: some peer did not connect in time (it is named).
        PeerError: a peer failed the TLS handshake or presented another party's certificate.
    """
    if party_id not in addresses:
        raise ConfigError(f"{party_id!r} has no address in the mesh")
    server_ctx = tls_context(cert_path, key_path, ca_path, server_side=True)
    client_ctx = tls_context(cert_path, key_path, ca_path, server_side=False)
    from veil.crypto.certs import load_certificate

    own = party_name(load_certificate(cert_path))
    if own != party_id:
        raise ConfigError(f"certificate {cert_path} names {own!r}, not {party_id!r}")
    peers = sorted(p for p in addresses if p != party_id)
    box = Mailbox(party_id, peers)
    deadline = time.monotonic() + connect_timeout_s
    accept_from = {p for p in peers if p < party_id}
    socks: dict[str, ssl.SSLSocket] = {}
    errors: list[BaseException] = []
    listener = socket.create_server(addresses[party_id], reuse_port=False, backlog=len(peers) + 8)
    listener.settimeout(0.1)

    def accept_loop() -> None:
        while accept_from - set(socks) and time.monotonic() < deadline and not errors:
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:  # pragma: no cover - listener closed
                errors.append(exc)
                return
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                tls = server_ctx.wrap_socket(raw, server_side=True)
                name = _peer_name(tls)
            except (ssl.SSLError, OSError, IntegrityError):
                raw.close()  # an unauthenticated or broken dialer: ignore it, keep listening
                continue
            if name not in accept_from or name in socks:
                tls.close()  # not a peer we accept from (or a second connection)
                continue
            socks[name] = tls

    acceptor = threading.Thread(target=accept_loop, daemon=True, name=f"veil-accept-{party_id}")
    acceptor.start()
    try:
        for p in peers:
            if p > party_id:
                socks[p] = _dial(addresses[p], p, client_ctx, deadline)
        acceptor.join(max(0.0, deadline - time.monotonic()) + 0.5)
    except BaseException:
        errors.append(RuntimeError("dial failed"))
        for s in socks.values():
            s.close()
        raise
    finally:
        listener.close()
    missing = sorted(set(peers) - set(socks))
    if missing:
        for s in socks.values():
            s.close()
        raise PeerTimeoutError(
            f"{party_id} not connected within {connect_timeout_s} s", peer=", ".join(missing)
        )
    links = {p: _Link(p, s, box, max_frame_bytes) for p, s in socks.items()}
    return TlsChannel(party_id, links, box)
