"""A star of mutual-TLS 1.3 links: the coordinator listens, each site dials out to it.

The same stage exchange as :class:`veil.transport.flower.GridLink`, without Flower's hops:
:class:`StarServer` (the coordinator) sends each site at most one :class:`Envelope` per
exchange and collects the replies until the deadline; :class:`StarClient` (a site, behind
its firewall) keeps one outgoing connection and answers each request with its handler.

1. A site dials; both sides check the chain against the deployment's CA (``CERT_REQUIRED``,
   TLS 1.3 only, :func:`veil.transport.tcp.tls_context`). The site refuses a server whose
   certificate does not name ``server_name``; the server refuses a site whose certificate
   names a party outside ``parties`` (or the server itself). The certificate's party name
   is the connection's identity; a second connection under a name replaces the first (a
   restarted site).
2. Exchange ``x`` (a counter): the server sends frame ``x`` to each party; a site replies
   with a frame carrying ``x``. The first well-formed reply of a party to the open exchange
   is its answer; a reply for an older exchange, an unsolicited frame, or anything after the
   deadline is dropped; a malformed frame or a broken connection makes the party absent.

Frames (:func:`encode_envelope`): ``len(header)`` (4 bytes, big-endian) ‖ UTF-8 JSON header
``{"v": 1, "x", "kind", "round", "meta"}`` (at most :data:`MAX_HEADER_BYTES`) ‖ payload, each
frame carried by :mod:`veil.transport.tcp`'s length-prefixed framing.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from veil.crypto.certs import load_certificate, party_name
from veil.errors import (
    ConfigError,
    IntegrityError,
    LocalError,
    MalformedMessageError,
    PeerError,
    PeerTimeoutError,
    VeilError,
)
from veil.transport.channel import Mailbox
from veil.transport.flower import Envelope, ExchangeStats
from veil.transport.sidechannels import OFF, SideChannels
from veil.transport.tcp import DEFAULT_MAX_FRAME_BYTES, _dial, _Link, _peer_name, tls_context

__all__ = ["StarServer", "StarClient", "encode_envelope", "decode_envelope", "decode_frame",
           "MAX_HEADER_BYTES", "DEFAULT_MAX_FRAME_BYTES"]

#: largest JSON header a frame may carry
MAX_HEADER_BYTES = 64 * 1024
_HLEN = struct.Struct(">I")
_KEYS = frozenset({"v", "x", "kind", "round", "meta"})
Path = str | os.PathLike[str]
Handler = Callable[[Envelope], Envelope | None]


def encode_envelope(env: Envelope, exchange: int = 0) -> bytes:
    """The frame that carries ``env`` as the message of exchange ``exchange``.

    Raises:
        LocalError: ``meta`` is not a JSON object of finite values, or the header is larger
            than :data:`MAX_HEADER_BYTES`.
    """
    try:
        header = json.dumps({"v": 1, "x": int(exchange), "kind": str(env.kind),
                             "round": int(env.round), "meta": dict(env.meta)},
                            sort_keys=True, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise LocalError(f"envelope meta is not a JSON object of finite values: {exc}") from None
    if len(header) > MAX_HEADER_BYTES:
        raise LocalError(f"envelope header of {len(header)} bytes exceeds {MAX_HEADER_BYTES}")
    return _HLEN.pack(len(header)) + header + bytes(env.payload)


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity


def decode_frame(data: bytes) -> tuple[int, Envelope]:
    """The exchange id and :class:`Envelope` of a frame from :func:`encode_envelope`.

    Raises:
        MalformedMessageError: truncated, oversized header, not strict UTF-8 JSON, or a
            header without exactly the fields and types above.
    """
    if len(data) < 4:
        raise MalformedMessageError("frame shorter than its header length")
    (n,) = _HLEN.unpack_from(data)
    if n > MAX_HEADER_BYTES or n > len(data) - 4:
        raise MalformedMessageError(f"frame header length {n} is impossible")
    try:
        h = json.loads(bytes(data[4:4 + n]).decode("utf-8"),
                       object_pairs_hook=_strict_object, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessageError(f"frame header is not JSON: {type(exc).__name__}") from None
    ints = (h.get("x"), h.get("round")) if isinstance(h, dict) else ()
    if (not isinstance(h, dict) or set(h) != _KEYS or h["v"] != 1 or type(h["v"]) is not int
            or not all(type(i) is int for i in ints) or h["x"] < 0 or h["round"] < -1
            or not isinstance(h["kind"], str) or not isinstance(h["meta"], dict)):
        raise MalformedMessageError("frame header lacks the veil star fields")
    return h["x"], Envelope(h["kind"], h["round"], bytes(data[4 + n:]), h["meta"])


def decode_envelope(data: bytes) -> Envelope:
    """The :class:`Envelope` of a frame (its exchange id dropped).

    Raises:
        MalformedMessageError: see :func:`decode_frame`.
    """
    return decode_frame(data)[1]


class _Sink:
    """What one server-side link delivers into, tagged with the link's generation."""

    def __init__(self, server: StarServer, gen: int) -> None:
        self.owner, self.server, self.gen = server._own, server, gen

    def put(self, sender: str, payload: bytes) -> None:
        self.server._deliver(self.gen, sender, payload)

    def fail(self, sender: str, why: str) -> None:
        self.server._drop(self.gen, sender)


class _Closing:
    """``with`` support: the block's end calls :meth:`close`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StarServer(_Closing):
    """The coordinator's side: listens for sites and runs stage exchanges with them.

    Args:
        listen: (host, port) to bind (port 0: any free port, see :attr:`address`).
        cert_path, key_path: the coordinator's certificate and key (PEM).
        ca_path: the CA every site's certificate must chain to.
        parties: the site names accepted (None: any party of the CA but the server).
        max_frame_bytes: largest frame sent or accepted.
        side_channels: with ``fixed_deadlines`` each exchange lasts its full timeout and
            the replies come back in :meth:`SideChannels.order` (as ``GridLink``).
        handshake_timeout_s: a dialer that has not finished TLS by then is dropped.

    Raises:
        ConfigError: unreadable certificate/key/CA files.
        OSError: the address cannot be bound.
    """

    def __init__(self, listen: tuple[str, int], cert_path: Path, key_path: Path, ca_path: Path,
                 *, parties: Iterable[str] | None = None,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 side_channels: SideChannels = OFF, handshake_timeout_s: float = 10.0) -> None:
        self._ctx = tls_context(cert_path, key_path, ca_path, server_side=True)
        self._own = party_name(load_certificate(cert_path))
        self._parties = None if parties is None else frozenset(parties)
        self.max_frame_bytes, self.side_channels = int(max_frame_bytes), side_channels
        self.stats = ExchangeStats()
        self._hs_timeout = float(handshake_timeout_s)
        self._cv = threading.Condition()
        self._links: dict[str, _Link] = {}
        self._gens: dict[str, int] = {}
        self._gen = itertools.count()
        self._xid, self._open = 0, frozenset[str]()
        self._replies: dict[str, Envelope] = {}
        self._done: set[str] = set()
        self._xlock = threading.Lock()
        self._handshakes = threading.BoundedSemaphore(64)
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="veil-star-send")
        self._listener = socket.create_server(listen, backlog=128)
        self._listener.settimeout(0.1)
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name="veil-star-accept")
        self._acceptor.start()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def connected(self) -> frozenset[str]:
        """The sites connected now."""
        with self._cv:
            return frozenset(self._links)

    def wait_for(self, parties: Iterable[str], timeout_s: float) -> frozenset[str]:
        """Wait until all of ``parties`` are connected or ``timeout_s`` passed.

        Returns:
            Those of ``parties`` connected at the end.
        """
        want, end = frozenset(parties), time.monotonic() + float(timeout_s)
        with self._cv:
            while not want <= set(self._links) and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            return want & frozenset(self._links)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener was closed
                return
            if not self._handshakes.acquire(blocking=False):
                raw.close()  # too many handshakes in flight: shed the newcomer
                continue
            threading.Thread(target=self._handshake, args=(raw,), daemon=True,
                             name="veil-star-handshake").start()

    def _handshake(self, raw: socket.socket) -> None:
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(self._hs_timeout)
            tls: ssl.SSLSocket | None = None
            try:
                tls = self._ctx.wrap_socket(raw, server_side=True)
                name = _peer_name(tls)
            except (ssl.SSLError, OSError, IntegrityError):
                (tls or raw).close()  # another CA, no certificate, a broken dialer: ignored
                return
            if name == self._own or (self._parties is not None and name not in self._parties):
                tls.close()
                return
            self._register(name, tls)
        finally:
            self._handshakes.release()

    def _register(self, name: str, tls: ssl.SSLSocket) -> None:
        with self._cv:
            if self._closed:
                tls.close()
                return
            gen = next(self._gen)
            old = self._links.pop(name, None)
            self._gens[name] = gen
            self._absent(name)  # an open exchange's request went to the old connection
        link = _Link(name, tls, _Sink(self, gen), self.max_frame_bytes)
        with self._cv:
            current = self._gens.get(name) == gen and not self._closed
            if current:
                self._links[name] = link
                self._cv.notify_all()
        if not current:
            link.shutdown()
        if old is not None:
            old.shutdown()

    def _deliver(self, gen: int, name: str, frame: bytes) -> None:
        try:
            xid, env = decode_frame(frame)
        except MalformedMessageError:
            xid, env = -1, None
        with self._cv:
            if (self._gens.get(name) != gen or name not in self._open
                    or name in self._replies or name in self._done):
                return  # a replaced connection, unsolicited, or already answered
            if env is None:
                self._done.add(name)  # malformed: absent from this exchange
            elif xid == self._xid:
                self._replies[name] = env
                self.stats.bytes_up[name] = self.stats.bytes_up.get(name, 0) + len(env.payload)
            else:
                return  # a stale reply to an older exchange
            self._cv.notify_all()

    def _drop(self, gen: int, name: str) -> None:
        with self._cv:
            if self._gens.get(name) == gen:
                del self._gens[name]
                self._links.pop(name, None)
                self._absent(name)

    def _absent(self, name: str) -> None:
        """(Under the lock) ``name`` will not answer the open exchange."""
        if name in self._open and name not in self._replies:
            self._done.add(name)
            self._cv.notify_all()

    def _send(self, link: _Link, frame: bytes, deadline: float, xid: int) -> None:
        try:
            link.send(frame, deadline)
        except VeilError:
            with self._cv:
                if link.closed and self._links.get(link.peer) is link:  # a half-sent frame
                    del self._links[link.peer]
                    self._gens.pop(link.peer, None)
                if self._xid == xid:
                    self._absent(link.peer)

    def exchange(self, outgoing: Mapping[str, Envelope], timeout_s: float
                 ) -> dict[str, Envelope]:
        """Send each party its envelope; return the replies that came back in time.

        A party not connected, silent until ``timeout_s``, whose connection broke, or that
        sent a malformed frame is absent from the result (as ``GridLink.exchange``).

        Raises:
            LocalError: a party outside ``parties``, a bad timeout, an envelope that cannot
                be encoded or exceeds ``max_frame_bytes``, or the server is closed.
        """
        if self._parties is not None and set(outgoing) - self._parties:
            raise LocalError(f"no site named {sorted(set(outgoing) - self._parties)}")
        if not (math.isfinite(timeout_s) and timeout_s >= 0):
            raise LocalError(f"exchange timeout must be a finite number ≥ 0, got {timeout_s!r}")
        with self._xlock:
            xid = self._xid + 1
            frames = {p: encode_envelope(env, xid) for p, env in outgoing.items()}
            big = [p for p, f in frames.items() if len(f) > self.max_frame_bytes]
            if big:
                raise LocalError(f"envelopes for {sorted(big)} exceed {self.max_frame_bytes} B")
            t0, start = time.perf_counter(), time.monotonic()
            end = start + float(timeout_s)
            with self._cv:
                if self._closed:
                    raise LocalError("the star server is closed")
                self._xid, self._open, self._replies = xid, frozenset(outgoing), {}
                links = {p: self._links[p] for p in outgoing if p in self._links}
                self._done = set(outgoing) - set(links)
            for p, link in links.items():
                n = len(outgoing[p].payload)
                self.stats.bytes_down[p] = self.stats.bytes_down.get(p, 0) + n
                self._pool.submit(self._send, link, frames[p], end, xid)
            fixed = self.side_channels.fixed_deadlines
            with self._cv:
                while fixed or len(self._done.union(self._replies)) < len(outgoing):
                    left = end - time.monotonic()
                    if left <= 0 or self._closed:
                        break
                    self._cv.wait(left)
                out, self._open = dict(self._replies), frozenset()
            if fixed:
                out = dict(self.side_channels.order(list(out.items())))
            self.stats.exchanges += 1
            self.stats.seconds.append(time.perf_counter() - t0)
            return out

    def close(self) -> None:
        """Stop listening and close every site connection (idempotent)."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            links = list(self._links.values())
            self._links.clear()
            self._gens.clear()
            self._cv.notify_all()
        self._listener.close()
        self._acceptor.join(timeout=1.0)
        for link in links:
            link.shutdown()
        for link in links:
            link.reader.join(timeout=1.0)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"StarServer({self.address}, connected={sorted(self.connected)})"


class StarClient(_Closing):
    """A site's side: one outgoing mutual-TLS connection to the coordinator.

    Args:
        address: the coordinator's (host, port).
        cert_path, key_path: the site's certificate (naming ``party``) and key.
        ca_path: the CA the coordinator's certificate must chain to.
        party: this site's name.
        server_name: the party name the coordinator's certificate must carry.
        connect_timeout_s: keep dialling (coordinator not up yet) until then.
        max_frame_bytes: largest frame sent or accepted.

    Raises:
        ConfigError: unreadable files, or our certificate does not name ``party``.
        IntegrityError: the server's certificate names another party (an impersonator).
        PeerError: the TLS handshake failed (e.g. a server certificate from another CA).
        PeerTimeoutError: the coordinator could not be reached in time.
    """

    def __init__(self, address: tuple[str, int], cert_path: Path, key_path: Path,
                 ca_path: Path, party: str, server_name: str = "coordinator",
                 connect_timeout_s: float = 30.0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        ctx = tls_context(cert_path, key_path, ca_path, server_side=False)
        if party_name(load_certificate(cert_path)) != party:
            raise ConfigError(f"certificate {cert_path} does not name {party!r}")
        self.party, self.server_name = party, server_name
        end = time.monotonic() + connect_timeout_s
        tls = _dial((str(address[0]), int(address[1])), server_name, ctx, end)
        self._box = Mailbox(party, [server_name])
        self._link = _Link(server_name, tls, self._box, int(max_frame_bytes))

    def serve(self, handler: Handler, stop: threading.Event | None = None) -> None:
        """Answer the coordinator's requests with ``handler`` until the link closes or ``stop``.

        ``handler`` returns the reply (None: stay silent). An exception in it becomes the
        reply ``Envelope("error", round, b"", {"error": <type>, "message": <text>})``; the
        text is kept only for veil's own errors (whose messages never hold secrets).
        """
        while stop is None or not stop.is_set():
            try:
                frame = self._box.get(self.server_name, 0.2)
            except PeerTimeoutError:
                continue
            except (PeerError, LocalError):
                return  # the connection closed or broke, or we were closed
            try:
                xid, env = decode_frame(frame)
            except MalformedMessageError:
                continue
            try:
                out = handler(env)
                data = None if out is None else encode_envelope(out, xid)
            except Exception as exc:  # noqa: BLE001 - a failing handler answers "error"
                text = str(exc)[:500] if isinstance(exc, VeilError) else ""
                data = encode_envelope(Envelope("error", env.round, b"", {
                    "error": type(exc).__name__, "message": text}), xid)
            if data is None:
                continue
            try:
                self._link.send(data)
            except VeilError:
                return

    def serve_in_thread(self, handler: Handler, stop: threading.Event | None = None
                        ) -> threading.Thread:
        """:meth:`serve` in a started daemon thread."""
        t = threading.Thread(target=self.serve, args=(handler, stop), daemon=True,
                             name=f"veil-star-{self.party}")
        t.start()
        return t

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._box.close()
        self._link.shutdown()
        self._link.reader.join(timeout=1.0)

    def __repr__(self) -> str:
        return f"StarClient({self.party!r} -> {self.server_name!r})"
