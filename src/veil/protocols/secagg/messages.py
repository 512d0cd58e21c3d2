"""SecAgg+ messages and their compact, versioned binary form.

Wire format: a 12-byte header ``b"VS" | version u8 | type u8 | round u32 | sender u32``
(little endian) then a type-specific body. Id lists are strictly increasing (canonical,
no duplicates); every count is bounded by the cohort size and every length is exact, so a
truncated, padded, oversized or re-typed message is refused with
:class:`~veil.errors.MalformedMessageError`, and a message from another round with
:class:`~veil.errors.IntegrityError` (replay). ``repr`` never shows key shares or tags.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from veil.crypto import aead, ring, shamir
from veil.errors import IntegrityError, MalformedMessageError
from veil.protocols import padding
from veil.protocols.secagg.config import SERVER_ID, SecAggConfig

__all__ = [
    "VERSION",
    "CT_BYTES",
    "TAG_BYTES",
    "SIG_BYTES",
    "DIGEST_BYTES",
    "SELF_SEED",
    "MASK_KEY",
    "Message",
    "AdvertiseKeys",
    "KeyBroadcast",
    "ShareKeys",
    "ShareRelay",
    "MaskedInput",
    "SurvivorList",
    "ConsistencyAck",
    "UnmaskRequest",
    "UnmaskResponse",
    "encode",
    "decode",
    "wire_size",
]

VERSION = 2
_HEADER = struct.Struct("<2sBBII")
_MAGIC = b"VS"
PK = 32
TAG_BYTES = 32
SIG_BYTES = 64  #: an Ed25519 signature (malicious-server mode)
DIGEST_BYTES = 32  #: SHA-256 digest of a signed advertisement
#: plaintext of an encrypted share: sender u32, receiver u32, two Shamir values
SHARE_PLAINTEXT = 8 + 2 * shamir.SHARE_BYTES
CT_BYTES = SHARE_PLAINTEXT + aead.overhead()
SELF_SEED = 0  #: share kind: self-mask seed b_u
MASK_KEY = 1  #: share kind: masking private key s_u^SK


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedMessageError("message truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def count(self, limit: int) -> int:
        c = self.u32()
        if c > limit:
            raise MalformedMessageError(f"list of {c} entries exceeds the cohort size {limit}")
        return c

    def ids(self, limit: int) -> tuple[int, ...]:
        c = self.count(limit)
        out = tuple(int(x) for x in struct.unpack(f"<{c}I", self.take(4 * c)))
        _check_increasing(out)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedMessageError(f"{len(self.data) - self.pos} trailing bytes")


def _check_increasing(ids: Sequence[int]) -> None:
    if any(b <= a for a, b in zip(ids, ids[1:])):
        raise MalformedMessageError("id list must be strictly increasing (no duplicates)")


def _ids(ids: Sequence[int]) -> bytes:
    return struct.pack(f"<I{len(ids)}I", len(ids), *ids)


@dataclass(frozen=True, repr=False)
class Message:
    """Common header fields. Subclasses add a body."""

    TYPE: ClassVar[int] = 0
    round: int
    sender: int

    def header(self) -> bytes:
        return _HEADER.pack(_MAGIC, VERSION, self.TYPE, self.round, self.sender)

    def body(self) -> bytes:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise (header + body)."""
        return self.header() + self.body()

    @classmethod
    def bound(cls, cfg: SecAggConfig) -> int:
        """Largest well-formed message of this type in a round of ``cfg`` (header
        included): the size every message of the type is padded to (plus the length
        field) when ``cfg.pad_messages`` is set. Depends on n, k, d, b and the mode only."""
        return _HEADER.size + cls._body_bound(cfg)

    @classmethod
    def _body_bound(cls, cfg: SecAggConfig) -> int:
        raise NotImplementedError

    def _summary(self) -> str:
        return ""

    def __repr__(self) -> str:
        who = "server" if self.sender == SERVER_ID else f"site {self.sender}"
        extra = self._summary()
        extra = ", " + extra if extra else ""
        return f"{type(self).__name__}(round={self.round}, from={who}{extra})"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class AdvertiseKeys(Message):
    """Step 1, site → server: the site's two X25519 public keys; in the malicious-server
    mode also its commitment to its self-mask seed and its Ed25519 signature over
    (session, round, site, keys, commitment). Empty ``commit``/``sig`` otherwise."""

    TYPE: ClassVar[int] = 1
    enc_pk: bytes
    mask_pk: bytes
    commit: bytes = b""
    sig: bytes = b""

    @classmethod
    def _body_bound(cls, cfg: SecAggConfig) -> int:
        return 2 * PK + (DIGEST_BYTES + SIG_BYTES if cfg.malicious else 0)

    def body(self) -> bytes:
        return self.enc_pk + self.mask_pk + self.commit + self.sig

    @classmethod
    def parse(cls, r: _Reader, rnd: int, sender: int, cfg: SecAggConfig) -> AdvertiseKeys:
        enc, mask = r.take(PK), r.take(PK)
        if cfg.malicious:
            return cls(rnd, sender, enc, mask, r.take(DIGEST_BYTES), r.take(SIG_BYTES))
        return cls(rnd, sender, enc, mask)


@dataclass(frozen=True, repr=False)
class KeyBroadcast(Message):
    """Step 1, server → site: the advertisements of the site and its neighbours that
    advertised ``(id, enc_pk, mask_pk, commit, sig)`` (commit/sig empty in the semi-honest
    mode), and in the malicious-server mode the digests ``(id, digest)`` of every
    advertisement the server accepted, from which each site derives the graph seed."""

    TYPE: ClassVar[int] = 2
    keys: tuple[tuple[int, bytes, bytes, bytes, bytes], ...]
    digests: tuple[tuple[int, bytes], ...] = ()

    @classmethod
    def _body_bound(cls, cfg: SecAggConfig) -> int:
        # the site and its ≤ k neighbours; the digests of all n advertisements (malicious)
        extra = DIGEST_BYTES + SIG_BYTES if cfg.malicious else 0
        digests = cfg.n * (4 + DIGEST_BYTES) if cfg.malicious else 0
        return 4 + (cfg.k + 1) * (4 + 2 * PK + extra) + 4 + digests

    def body(self) -> bytes:
        return (
            struct.pack("<I", len(self.keys))
            + b"".join(struct.pack("<I", i) + c + s + cm + sg for i, c, s, cm, sg in self.keys)
            + _tag_bytes(self.digests)
        )

    def _summary(self) -> str:
        return f"{len(self.keys)} keys"

    @classmethod
    def parse(cls, r: _Reader, rnd: int, sender: int, cfg: SecAggConfig) -> KeyBroadcast:
        extra = (DIGEST_BYTES, SIG_BYTES) if cfg.malicious else (0, 0)
        keys = tuple(
            (r.u32(), r.take(PK), r.take(PK), r.take(extra[0]), r.take(extra[1]))
            for _ in range(r.count(cfg.n))
        )
        _check_increasing([k[0] for k in keys])
        digests = _tags(r, cfg.n, DIGEST_BYTES)
        if digests and not cfg.malicious:
            raise MalformedMessageError("advertisement digests in a semi-honest round")
        return cls(rnd, sender, keys, digests)


@dataclass(frozen=True, repr=False)
class _Cts(Message):
    """A list of (peer id, fixed-size ciphertext)."""

    cts: tuple[tuple[int, bytes], ...]

    @classmethod
    def _body_bound(cls, cfg: SecAggConfig) -> int:
        return 4 + cfg.k * (4 + CT_BYTES)  # one per neighbour

    def body(self) -> bytes:
        return struct.pack("<I", len(self.cts)) + b"".join(
            struct.pack("<I", i) + c for i, c in self.cts
        )

    def _summary(self) -> str:
        return f"{len(self.cts)} ciphertexts"

    @classmethod
    def parse(cls, r: _Reader, rnd: int, sender: int, cfg: SecAggConfig) -> _Cts:
        cts = tuple((r.u32(), r.take(CT_BYTES)) for _ in range(r.count(cfg.n)))
        _check_increasing([c[0] for c in cts])
        return cls(rnd, sender, cts)


@dataclass(frozen=True, repr=False)
class ShareKeys(_Cts):
    """Step 2, site → server: encrypted shares, one ciphertext per neighbour (``to``)."""

    TYPE: ClassVar[int] = 3


@dataclass(frozen=True, repr=False)
class ShareRelay(_Cts):
    """Step 2, server → site: the ciphertexts addressed to the site (``from``)."""

    TYPE: ClassVar[int] = 4


@dataclass(frozen=True, repr=False)
class MaskedInput(Message):
    """Step 3, site → server: the masked vector packed on b bits per element, and the
    neighbours whose share ciphertexts did not open (malicious-server mode: the site holds
    no shares of them and names them)."""

    TYPE: ClassVar[int] = 5
    payload: bytes
    bad: tuple[int, ...] = ()

    @classmethod
    def _body_bound(cls, cfg: SecAggConfig) -> int:
        return 4 + 4 * cfg.k + ring.packed_size(cfg.dim, cfg.bits)

    def body(self) -> bytes:
        return _ids(self.bad) + self.payload

    def _summary(self) -> str:
        return f"{len(self.payload)} bytes"

    @classmethod
    def parse(cls, r: _Reader, rnd: int, sender: int, cfg: SecAggConfig) -> MaskedInput:
        bad = r.ids(cfg.n)
        return cls(rnd, sender, r.take(ring.packed_size(cfg.dim, cfg.bits)), bad)


@dataclass(frozen=True, repr=False)
class SurvivorList(Message):
    """Step 4, server → site: the sites whose masked input arrived (U3)."""

    TYPE: ClassVar[int] = 6
    survivors: tuple[int, ...]

    @classmethod
    def _body_bound(cls, cfg: SecAggConfig) -> int:
        return 4 + 4 * cfg.n

    def body(self) -> bytes:
        return _ids(self.survivors)

    def _summary(self) -> str:
        return f"{len(self.survivors)} survivors"

    @classmethod
    def parse(cls, r: _Reader, rnd: int, sender: int, cfg: SecAggConfig) -> SurvivorList:
        return cls(rnd, sender, r.ids(cfg.n))


def _tags(r: _Reader, limit: int, size: int = TAG_BYTES) -> tuple[tuple[int, bytes], ...]:
    tags = tuple((r.u32(), r.take(size)) for _ in range(r.count(limit)))
    _check_increasing([t[0] for t in tags])
    return tags


def _tag_bytes(tags: Sequence[tuple[int, bytes]]) -> bytes:
    return struct.pack("<I", len(tags)) + b"".join(struct.pack("<I", i) + t for i, t in tags)


@dataclass(frozen=True, repr=False)
class ConsistencyAck(Message):
    """Step 4, site → server: a MAC of the survivor list for each surviving neighbour
    (semi-honest mode), or the site's one Ed25519 signature of the list, as the single
    entry ``(site, signature)`` (malicious-server mode)."""

    TYPE: ClassVar[int] = 7
    tags: tuple[tuple[int, bytes], ...]

    @classmethod
    def _body_bound(cls, cfg: SecAggConfig) -> int:
        return 4 + (4 + SIG_BYTES if cfg.malicious else cfg.k * (4 + TAG_BYTES))

    def body(self) -> bytes:
        return _tag_bytes(self.tags)

    def _summary(self) -> str:
        return f"{len(self.tags)} tags"

    @classmethod
    def parse(cls, r: _Reader, rnd: int, sender: int, cfg: SecAggConfig) -> ConsistencyAck:
        tags = _tags(r, cfg.n, SIG_BYTES if cfg.malicious else TAG_BYTES)
        if cfg.malicious and (len(tags) != 1 or tags[0][0] != sender):
            raise MalformedMessageError("a consistency signature is one entry from its signer")
        return cls(rnd, sender, tags)


@dataclass(frozen=True, repr=False)
class UnmaskRequest(Message):
    """Step 5, server → site: whose self-seed shares and whose key shares to reveal, and
    the neighbours' consistency tags addressed to the site (semi-honest mode) or the
    neighbours' signatures of their survivor lists (malicious-server mode)."""

    TYPE: ClassVar[int] = 8
    seed_of: tuple[int, ...]
    key_of: tuple[int, ...]
    tags: tuple[tuple[int, bytes], ...]

    @classmethod
    def _body_bound(cls, cfg: SecAggConfig) -> int:
        # seed_of and key_of are disjoint sets of held neighbours: ≤ k ids in all
        size = SIG_BYTES if cfg.malicious else TAG_BYTES
        return 12 + 4 * cfg.k + cfg.k * (4 + size)

    def body(self) -> bytes:
        return _ids(self.seed_of) + _ids(self.key_of) + _tag_bytes(self.tags)

    def _summary(self) -> str:
        return f"{len(self.seed_of)} seed shares, {len(self.key_of)} key shares asked"

    @classmethod
    def parse(cls, r: _Reader, rnd: int, sender: int, cfg: SecAggConfig) -> UnmaskRequest:
        size = SIG_BYTES if cfg.malicious else TAG_BYTES
        return cls(rnd, sender, r.ids(cfg.n), r.ids(cfg.n), _tags(r, cfg.n, size))


@dataclass(frozen=True, repr=False)
class UnmaskResponse(Message):
    """Step 5, site → server: shares ``(peer, kind, value)``; kind is SELF_SEED or MASK_KEY."""

    TYPE: ClassVar[int] = 9
    shares: tuple[tuple[int, int, bytes], ...]

    @classmethod
    def _body_bound(cls, cfg: SecAggConfig) -> int:
        return 4 + cfg.k * (5 + shamir.SHARE_BYTES)

    def body(self) -> bytes:
        return struct.pack("<I", len(self.shares)) + b"".join(
            struct.pack("<IB", i, k) + y for i, k, y in self.shares
        )

    def _summary(self) -> str:
        return f"{len(self.shares)} shares"

    @classmethod
    def parse(cls, r: _Reader, rnd: int, sender: int, cfg: SecAggConfig) -> UnmaskResponse:
        out = []
        for _ in range(r.count(cfg.n)):
            i, kind = struct.unpack("<IB", r.take(5))
            if kind not in (SELF_SEED, MASK_KEY):
                raise MalformedMessageError(f"unknown share kind {kind}")
            out.append((int(i), int(kind), r.take(shamir.SHARE_BYTES)))
        _check_increasing([s[0] for s in out])
        return cls(rnd, sender, tuple(out))


_TYPES: dict[int, type[Message]] = {
    c.TYPE: c
    for c in (
        AdvertiseKeys, KeyBroadcast, ShareKeys, ShareRelay, MaskedInput,
        SurvivorList, ConsistencyAck, UnmaskRequest, UnmaskResponse,
    )
}


def max_message_bytes(cfg: SecAggConfig) -> int:
    """Largest well-formed message in this round (anything longer is refused unread)."""
    entry = max(4 + 2 * PK + DIGEST_BYTES + SIG_BYTES, 4 + CT_BYTES, 4 + SIG_BYTES,
                5 + shamir.SHARE_BYTES)
    return (_HEADER.size + 16 + cfg.n * (entry + 4 + DIGEST_BYTES + 8)
            + ring.packed_size(cfg.dim, cfg.bits))


def wire_size(cls: type[Message], cfg: SecAggConfig) -> int | None:
    """Size of every message of type ``cls`` on the wire in a round of ``cfg`` (None:
    unpadded, the size follows the content)."""
    return padding.padded_size(cls.bound(cfg)) if cfg.pad_messages else None


def encode(msg: Message, cfg: SecAggConfig) -> bytes:
    """The bytes to send for ``msg`` (padded to :func:`wire_size` when
    ``cfg.pad_messages``).

    Raises:
        LocalError: the message exceeds its type's bound (a bug on the sending side).
    """
    data = msg.to_bytes()
    size = wire_size(type(msg), cfg)
    return data if size is None else padding.pad(data, size)


def decode(data: bytes, cfg: SecAggConfig) -> Message:
    """Parse one message of this round (stripping the padding first when
    ``cfg.pad_messages``: then a message of any other size than its type's
    :func:`wire_size` is refused).

    Raises:
        MalformedMessageError: wrong magic/version/type, truncated, oversized, trailing
            bytes, unsorted or oversized lists, wrong padding or padded size.
        IntegrityError: the message belongs to another round (replay).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessageError(f"a message is bytes, got {type(data).__name__}")
    data = bytes(data)
    if not cfg.pad_messages:
        return _decode(data, cfg)
    if len(data) > padding.padded_size(max_message_bytes(cfg)):
        raise MalformedMessageError(f"message of {len(data)} bytes exceeds the limit")
    msg = _decode(padding.unpad(data), cfg)
    if len(data) != wire_size(type(msg), cfg):
        raise MalformedMessageError(
            f"{type(msg).__name__} padded to {len(data)} bytes, not {wire_size(type(msg), cfg)}"
        )
    return msg


def _decode(data: bytes, cfg: SecAggConfig) -> Message:
    """Parse one unpadded message (see :func:`decode`)."""
    if len(data) > max_message_bytes(cfg):
        raise MalformedMessageError(f"message of {len(data)} bytes exceeds the limit")
    if len(data) < _HEADER.size:
        raise MalformedMessageError("message shorter than its header")
    magic, version, mtype, rnd, sender = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise MalformedMessageError("not a SecAgg message (bad magic)")
    if version != VERSION:
        raise MalformedMessageError(f"unsupported message version {version} (this is {VERSION})")
    cls = _TYPES.get(mtype)
    if cls is None:
        raise MalformedMessageError(f"unknown message type {mtype}")
    if rnd != cfg.round:
        raise IntegrityError(f"{cls.__name__} of round {rnd} replayed into round {cfg.round}")
    r = _Reader(data, _HEADER.size)
    msg = cls.parse(r, rnd, sender, cfg)  # type: ignore[attr-defined]
    r.end()
    return msg
