"""The plain sum of compressed payloads: each site's row goes through its real wire format.

A compression stage that ends a plain pipeline (:class:`~veil.aggregation.topk.TopK`,
:class:`~veil.aggregation.qsgd.QSGD` with each site's own scale) is a *codec*:
``pack(row) -> bytes`` is the message the site sends, ``unpack(payload, width) -> row``
what the server reads back from it. :class:`PayloadSum` packs each surviving site's row,
unpacks it on the server side and adds the rows, so the sum is the sum of what was really
sent and the bytes counted for a site are the payload's length plus the 16-byte header
:class:`~veil.aggregation.plain.PlainSum` counts (round, sender, length).

The helpers here are the wire pieces the codecs share: float32 values, the narrowest
unsigned index width, and ``b``-bit codes packed ``8/b`` to a byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from veil.aggregation.base import FLOAT, Domain, SumResult, expect
from veil.errors import AbortError, LocalError

__all__ = ["Codec", "PayloadSum", "HEADER_BYTES", "index_dtype", "pack_codes", "unpack_codes"]

#: per-message header counted for every site (round, sender, length), as PlainSum counts
HEADER_BYTES = 16


@runtime_checkable
class Codec(Protocol):
    """A stage's wire format for one encoded row."""

    @property
    def name(self) -> str:
        """The stage's name."""
        ...

    def pack(self, row: np.ndarray) -> bytes:
        """The bytes a site sends for ``row``."""
        ...

    def unpack(self, payload: bytes, width: int) -> np.ndarray:
        """The row (float64, length ``width``) the server reads from ``payload``."""
        ...


def index_dtype(width: int) -> np.dtype[Any]:
    """The narrowest little-endian unsigned integer that holds indices below ``width``."""
    return np.dtype("<u2") if width <= 1 << 16 else np.dtype("<u4")


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack integers in ``[0, 2^bits)`` on ``bits`` bits each (big-endian bit order)."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
    planes = (np.asarray(codes, dtype=np.uint8)[:, None] >> shifts) & 1
    return np.packbits(planes.ravel()).tobytes()


def unpack_codes(buf: bytes, n: int, bits: int) -> np.ndarray:
    """Invert :func:`pack_codes` for ``n`` codes.

    Raises:
        LocalError: ``buf`` is too short for ``n`` codes.
    """
    raw = np.frombuffer(buf, dtype=np.uint8)
    if raw.size * 8 < n * bits:
        raise LocalError(f"payload holds {raw.size * 8} bits, {n * bits} needed")
    planes = np.unpackbits(raw, count=n * bits).reshape(n, bits).astype(np.int64)
    return planes @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))


@dataclass(frozen=True)
class PayloadSum:
    """Plain summation through a codec: sum of ``unpack(pack(row))`` over the survivors.

    Args:
        codec: the last stage of the chain (its ``pack``/``unpack``).
    """

    codec: Any
    name: str = "payload_sum"
    #: the one point at which a site can drop out: before it sends its payload
    stages: ClassVar[tuple[str, ...]] = ("before_send",)

    def domain(self, upstream: Domain) -> Domain:
        """Sums what its codec packs: float or sparse float vectors."""
        if upstream.kind not in ("float", "sparse"):
            expect(self.name, upstream, FLOAT)
        return upstream

    def aggregate(
        self,
        encoded: np.ndarray,
        site_ids: np.ndarray,
        round: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> SumResult:
        """Pack each row that is sent, unpack it at the server, add.

        Raises:
            AbortError: every site dropped out before sending.
        """
        width = int(encoded.shape[1])
        total = np.zeros(width, dtype=np.float64)
        sent: dict[int, int] = {}
        for row, sid in zip(encoded, np.asarray(site_ids)):
            if dropouts and int(sid) in dropouts:
                continue
            payload = self.codec.pack(row)
            total += self.codec.unpack(payload, width)
            sent[int(sid)] = len(payload) + HEADER_BYTES
        if not sent:
            raise AbortError(f"round {round}: every site dropped out before sending")
        float32 = width * 4 + HEADER_BYTES
        meas = {"float32_ratio": float32 / float(np.mean(list(sent.values())))}
        return SumResult(
            total=total,
            survivors=np.asarray(list(sent), dtype=np.int64),
            bytes_sent=sent,
            measurements=meas,
        )
