"""Top-k sparsification with error feedback (a plain-sum compression stage).

Site side, per row: add the residual the site kept from earlier rounds, ``x = u + e``;
send the ``k = ⌈ratio · d⌉`` coordinates of largest ``|x|`` (values as float32, indices on
the narrowest unsigned width); keep ``e' = x − sent`` in the site's own state, so nothing
is lost, only delayed (Stich, Cordonnier & Jaggi 2018; Karimireddy et al. 2019):
``Σ_rounds sent + e_final = Σ_rounds u`` (the residual is kept in float64). The last
``passthrough`` coordinates (e.g. :class:`~veil.aggregation.plain.WeightedMean`'s weight)
are sent as they are and never enter the residual.

What it emits is its own domain, :data:`SPARSE`: every site chooses its own support, so
the coordinates of two sites' messages do not line up in a secure sum, and the support
itself (which coordinates moved most) would be shown to the server. Only a plaintext sum
takes it (:class:`~veil.aggregation.payload.PayloadSum`, which counts the real payload
``k · (4 + index bytes)``); a quantiser, a DP stage or SecAgg+ after it refuses the chain,
naming the fix (``randk``: a support shared by the cohort, or ``qsgd``).

With error feedback the sent vector depends on earlier rounds' data outside any clip, so
the stage declares ``dp = "unsafe"`` and a chain with a DP mechanism refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from veil.aggregation.base import FLOAT, DecodeContext, Domain, EncodeContext, expect
from veil.aggregation.payload import index_dtype
from veil.errors import ConfigError, LocalError

__all__ = ["TopK", "SPARSE", "SparseDomain"]


@dataclass(frozen=True)
class SparseDomain(Domain):
    """Float vectors in which each site keeps its own support (top-k)."""

    def __str__(self) -> str:
        return (
            "top-k sparse vectors (each site keeps its own coordinates, so a secure sum "
            "cannot align them and the support would leak: use aggregation.compression = "
            "'randk' (a support shared by the cohort) or 'qsgd' there, or a plain sum)"
        )


SPARSE = SparseDomain("sparse")


def check_ratio(ratio: float) -> None:
    """Refuse a kept fraction outside (0, 1] (top-k and random-k).

    Raises:
        ConfigError: naming ``aggregation.compression_ratio``.
    """
    if not (0 < ratio <= 1):
        raise ConfigError(f"compression_ratio must be in (0, 1], got {ratio}",
                          key="aggregation.compression_ratio")


def kept_count(ratio: float, d: int) -> int:
    """Coordinates kept out of ``d`` at fraction ``ratio``: ``ceil(ratio·d)``, at least 1."""
    return max(1, min(d, math.ceil(ratio * d)))


def residuals(site_states: list[Any], n: int, d: int) -> np.ndarray:
    """Each row's kept residual (zeros for a site that has none yet), shape ``(n, d)``.

    Raises:
        LocalError: a kept residual has another width (the model changed under the site).
    """
    out = np.zeros((n, d), dtype=np.float64)
    for i, s in enumerate(site_states[:n]):
        if s is None:
            continue
        r = np.asarray(s)
        if r.shape != (d,):
            raise LocalError(f"error-feedback residual has shape {r.shape}, expected ({d},)")
        out[i] = r
    return out


@dataclass(frozen=True)
class TopK:
    """Send the ``ratio`` largest-magnitude coordinates of each row, keep the rest.

    Args:
        ratio: fraction of the (non-passthrough) coordinates each site sends, in (0, 1].
        passthrough: trailing coordinates sent as they are (a weight column).
        error_feedback: keep what was not sent at the site and add it next round.

    Raises:
        ConfigError: ``ratio`` outside (0, 1] or a negative ``passthrough``.
    """

    ratio: float
    passthrough: int = 0
    error_feedback: bool = True
    name: str = "topk"

    def __post_init__(self) -> None:
        check_ratio(self.ratio)
        if self.passthrough < 0:
            raise ConfigError("passthrough must be ≥ 0", key="aggregation.compression")

    @property
    def dp(self) -> str:
        """``"unsafe"`` with error feedback: the residual escapes any clip before it."""
        return "unsafe" if self.error_feedback else ""

    def domain(self, upstream: Domain) -> Domain:
        """Float vectors in, :data:`SPARSE` out."""
        expect(self.name, upstream, FLOAT)
        return SPARSE

    def init(self) -> None:
        """No server state."""
        return None

    def init_site(self) -> None:
        """No residual before the first round."""
        return None

    def k(self, d: int) -> int:
        """Coordinates sent out of ``d``."""
        return kept_count(self.ratio, d)

    def encode(
        self, state: None, site_states: list[Any], updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """Keep each row's top-k of ``u + e`` (float32 values), the rest as its residual."""
        n, width = updates.shape
        d = width - self.passthrough
        x = np.asarray(updates[:, :d], dtype=np.float64)
        if self.error_feedback:
            x = x + residuals(site_states, n, d)
        k = self.k(d)
        idx = np.argpartition(np.abs(x), d - k, axis=1)[:, d - k:]
        rows = np.arange(n)[:, None]
        out = np.zeros((n, width), dtype=np.float64)
        out[rows, idx] = x[rows, idx].astype(np.float32)
        out[:, d:] = np.asarray(updates[:, d:], dtype=np.float32)
        new_states: list[Any] = list(site_states)
        meas: dict[str, np.ndarray] = {}
        if self.error_feedback:
            res = x - out[:, :d]
            new_states = [res[i].copy() for i in range(n)]
            meas["residual_norm"] = np.linalg.norm(res, axis=1)
        return out, new_states, meas

    def decode(
        self, state: None, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[None, np.ndarray, Mapping[str, float], None]:
        """The (already dense) sum of the sparse rows."""
        return None, aggregate, {}, None

    # ------------------------------------------------------------------ wire format
    def pack(self, row: np.ndarray) -> bytes:
        """``[indices (u16 or u32)] [values f32] [passthrough f32]``; the count follows
        from the length."""
        d = row.shape[0] - self.passthrough
        idx = np.flatnonzero(row[:d])
        return (
            idx.astype(index_dtype(d)).tobytes()
            + row[idx].astype("<f4").tobytes()
            + row[d:].astype("<f4").tobytes()
        )

    def unpack(self, payload: bytes, width: int) -> np.ndarray:
        """Invert :meth:`pack`.

        Raises:
            LocalError: a payload of impossible length.
        """
        d = width - self.passthrough
        it = index_dtype(d).itemsize
        body = len(payload) - 4 * self.passthrough
        if body < 0 or body % (it + 4):
            raise LocalError(f"top-k payload of {len(payload)} bytes is malformed")
        m = body // (it + 4)
        idx = np.frombuffer(payload, dtype=index_dtype(d), count=m).astype(np.int64)
        if m and int(idx.max()) >= d:
            raise LocalError("top-k payload has an index out of range")
        out = np.zeros(width, dtype=np.float64)
        out[idx] = np.frombuffer(payload, dtype="<f4", count=m, offset=m * it)
        out[d:] = np.frombuffer(payload, dtype="<f4", count=self.passthrough, offset=m * (it + 4))
        return out
