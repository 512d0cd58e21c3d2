"""Low-bit unbiased stochastic quantisation, QSGD-style (Alistarh et al. 2017), 1–8 bits.

Each coordinate is mapped to ``t = v / s ∈ [−1, 1]`` and rounded *stochastically* to the
``2^b`` evenly spaced points ``−1 + 2j/L`` (``L = 2^b − 1``, code ``j ∈ [0, L]``): up with
probability equal to the distance to the point below, so ``E[ŝ·(2j/L − 1)] = v``
(unbiased) and the per-coordinate variance is at most ``s² / L²``. One bit is the
stochastic sign ``±s``. The rounding coins come from the site's own CSPRNG stream.

Two scales, two places in a pipeline:

* **own scale** (``scale=None``, plain sums): ``s = max_i |v_i|`` of the site's row, sent
  as float32 beside the codes. QSGD proper uses the L2 norm with a sign bit; the max-norm
  on a symmetric grid keeps the variance lower and gives a 1-bit mode. The stage is then a
  codec for :class:`~veil.aggregation.payload.PayloadSum`: a site sends
  ``4 + ⌈d·b/8⌉`` bytes (plus ``passthrough`` float32 coordinates, e.g. a weight).
* **shared scale** (``scale=R``, secure sums): every site uses the public range ``R``
  (values beyond it are clipped: a stated bias) and emits its integer codes into the ring
  ``Z_2^B`` with ``B = bitlen(n · L)`` for a cohort bound ``n``, so the sum of up to
  ``n`` sites' codes never wraps (the masks of SecAgg+ are uniform on any ring width);
  SecAgg+ then masks and sends ``B`` bits per coordinate. The server reads
  ``Σv ≈ R · (2 S / L − m)`` from the code sum ``S`` of ``m`` survivors. Sites with
  different scales could not be summed under a mask, which is why the secure mode shares
  one.

Quantising after a DP clip can lengthen a vector beyond the clip bound (each coordinate
moves to a grid point), so the stage declares ``dp = "unsafe"``: a chain with a client-
level DP mechanism refuses it (distributed DP has its own quantiser sized with its noise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from veil.aggregation.base import FLOAT, DecodeContext, Domain, EncodeContext, expect, ring
from veil.aggregation.payload import pack_codes, unpack_codes
from veil.crypto.ring import reduce
from veil.errors import ConfigError, LocalError

__all__ = ["QSGD"]


@dataclass(frozen=True)
class QSGD:
    """Unbiased ``bits``-bit stochastic quantisation of each row.

    Args:
        bits: bits per coordinate, 1–8.
        scale: ``None`` for each site's own max-norm scale (plain sums), or the public
            range ``R`` every site shares (secure sums).
        cohort_bound: most sites summed (shared scale only: sizes the ring).
        passthrough: trailing coordinates sent as float32 as they are (own scale only).

    Raises:
        ConfigError: bits outside 1–8, a non-positive scale, a shared scale without a
            cohort bound, or passthrough coordinates with a shared scale.
    """

    bits: int = 4
    scale: float | None = None
    cohort_bound: int | None = None
    passthrough: int = 0
    name: str = "qsgd"
    dp: ClassVar[str] = "unsafe"

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 1 <= self.bits <= 8):
            raise ConfigError(
                f"compression_bits must be an integer in 1..8, got {self.bits!r}",
                key="aggregation.compression_bits",
            )
        if self.scale is not None:
            if not (self.scale > 0 and np.isfinite(self.scale)):
                raise ConfigError("qsgd scale must be a positive finite number",
                                  key="aggregation.quantize_range")
            if not (self.cohort_bound and self.cohort_bound >= 1):
                raise ConfigError("qsgd with a shared scale needs cohort_bound ≥ 1",
                                  key="aggregation.compression")
            if self.passthrough:
                raise ConfigError("qsgd with a shared scale quantises every coordinate "
                                  "(passthrough = 0)", key="aggregation.compression")

    @property
    def levels(self) -> int:
        """L = 2^bits − 1 (the grid has L + 1 points)."""
        return (1 << self.bits) - 1

    @property
    def ring_bits(self) -> int:
        """B, the ring width a sum of ``cohort_bound`` sites' codes needs (shared scale)."""
        return (int(self.cohort_bound or 1) * self.levels).bit_length()

    def domain(self, upstream: Domain) -> Domain:
        """Float vectors in; float (own scale) or ``Z_2^B`` (shared scale) out."""
        expect(self.name, upstream, FLOAT)
        return FLOAT if self.scale is None else ring(self.ring_bits)

    def init(self) -> None:
        """No server state."""
        return None

    def init_site(self) -> None:
        """No site state (unbiased: nothing to feed back)."""
        return None

    def _codes(self, t: np.ndarray, rng: Any) -> np.ndarray:
        """Stochastic rounding of ``t ∈ [−1, 1]`` to codes in ``[0, L]``."""
        x = (t + 1.0) * (self.levels / 2.0)
        low = np.floor(x)
        up = rng.uniform(x.shape[0]) < (x - low)
        return np.clip(low.astype(np.int64) + up, 0, self.levels)

    def encode(
        self, state: None, site_states: list[Any], updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """Quantise each row with its own stream: dequantised floats or ring codes.

        Raises:
            LocalError: a row has no privacy stream, or more rows than the cohort bound.
        """
        n, width = updates.shape
        d = width - self.passthrough
        if self.scale is not None and n > int(self.cohort_bound or 0):
            raise LocalError(f"{n} rows but the qsgd ring is sized for {self.cohort_bound}")
        out = np.empty((n, width), dtype=np.float64 if self.scale is None else np.int64)
        clipped = np.zeros(n)
        for i in range(n):
            rng = ctx.row_rng(i, "QSGD (stochastic rounding)")
            v = np.asarray(updates[i, :d], dtype=np.float64)
            if self.scale is None:
                s = float(np.float32(np.max(np.abs(v), initial=0.0)))
                t = v / s if s > 0 else np.zeros(d)
                out[i, :d] = s * (2.0 * self._codes(np.clip(t, -1, 1), rng) / self.levels - 1)
                out[i, d:] = np.asarray(updates[i, d:], dtype=np.float32)
            else:
                clipped[i] = np.count_nonzero(np.abs(v) > self.scale) / max(1, d)
                out[i] = self._codes(np.clip(v / self.scale, -1.0, 1.0), rng)
        return out, list(site_states), ({} if self.scale is None else
                                        {"clipped_fraction": clipped})

    def decode(
        self, state: None, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[None, np.ndarray, Mapping[str, float], None]:
        """Own scale: the float sum as it is; shared scale: ``R · (2S/L − m)``.

        Raises:
            LocalError: more survivors than the ring was sized for.
        """
        if self.scale is None:
            return None, np.asarray(aggregate, dtype=np.float64), {}, None
        m = len(ctx.survivors)
        if m > int(self.cohort_bound or 0):
            raise LocalError(f"{m} sites summed but the qsgd ring is sized for "
                             f"{self.cohort_bound}")
        s = reduce(np.asarray(aggregate), self.ring_bits).astype(np.float64)
        total = self.scale * (2.0 * s / self.levels - m)
        return None, total, {"scale": float(self.scale), "ring_bits": float(self.ring_bits)}, None

    # ------------------------------------------------------------------ wire format
    def pack(self, row: np.ndarray) -> bytes:
        """Own scale: ``[scale f32] [codes, b bits each] [passthrough f32]``."""
        d = row.shape[0] - self.passthrough
        v = np.asarray(row[:d], dtype=np.float64)
        s = np.float32(np.max(np.abs(v), initial=0.0))
        codes = (np.zeros(d, dtype=np.int64) if s == 0 else
                 np.rint((v / float(s) + 1.0) * (self.levels / 2.0)).astype(np.int64))
        return (s.astype("<f4").tobytes() + pack_codes(np.clip(codes, 0, self.levels), self.bits)
                + row[d:].astype("<f4").tobytes())

    def unpack(self, payload: bytes, width: int) -> np.ndarray:
        """Invert :meth:`pack` (own scale).

        Raises:
            LocalError: a payload of the wrong length.
        """
        d = width - self.passthrough
        body = (d * self.bits + 7) // 8
        if len(payload) != 4 + body + 4 * self.passthrough:
            raise LocalError(f"qsgd payload of {len(payload)} bytes is malformed")
        s = float(np.frombuffer(payload, dtype="<f4", count=1)[0])
        codes = unpack_codes(payload[4:4 + body], d, self.bits)
        out = np.empty(width, dtype=np.float64)
        out[:d] = s * (2.0 * codes / self.levels - 1.0)
        out[d:] = np.frombuffer(payload, dtype="<f4", count=self.passthrough, offset=4 + body)
        return out
