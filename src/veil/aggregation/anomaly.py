"""Server-side anomaly scores per update and a norm bound (plaintext aggregation only).

:class:`ScreenedSum` wraps a plaintext summation (the plain sum or a robust rule). Before
summing it scores every row it received:

* ``norm_i = ‖u_i‖`` and ``cos_i = cos(u_i, ref)``, where ``ref`` is the coordinate-wise
  median of the round's updates — the aggregate of reference (a mean would be pulled
  towards the attackers it is meant to expose);
* robust z-scores ``z = (x − median(x)) / (1.4826 · MAD(x))`` of both across the round
  (the MAD is floored, so a round of identical updates flags nobody);
* a row is **flagged** when ``z_norm > threshold`` (too large) or
  ``z_cos < −threshold`` (pointing away from the others), and **over bound** when
  ``norm_i > norm_bound``.

Flagged ids go into the round record (``flagged``). Rows over the bound are always left out
of the sum; flagged rows are left out too with ``drop = True`` (else only reported).

Under FedAvg weighting the rows are ``[w·u, w]``: with ``weight_column = True`` the update
``u`` is read back as the row divided by its last coordinate (checked against the chain).

It protects against updates that stand out — a boosted or sign-flipped update, a model
replacement — not against attackers who stay inside the honest spread, and with many
attackers (near half) the median and MAD themselves move. It needs every update in the
clear: under a secure summation it is refused (:func:`~veil.aggregation.robust.secure_refusal`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from veil.aggregation.base import FLOAT, Domain, SumResult, expect, summation_domain
from veil.errors import AbortError, ConfigError

__all__ = ["AnomalyScores", "anomaly_scores", "robust_z", "ScreenedSum", "SECURE_SUMMATIONS"]

#: summation protocols whose server sees no single update
SECURE_SUMMATIONS = ("secagg", "ckks")

_MAD_TO_SIGMA = 1.4826


def robust_z(x: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Robust z-scores ``(x − median) / (1.4826 · max(MAD, floor · max(|median|, 1)))``."""
    x = np.asarray(x, dtype=np.float64)
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    scale = _MAD_TO_SIGMA * max(mad, floor * max(abs(med), 1.0))
    return (x - med) / scale


@dataclass(frozen=True)
class AnomalyScores:
    """Per-update scores of one round (one entry per row).

    Attributes:
        norm: L2 norm of each update.
        cosine: cosine of each update to the coordinate-wise median of the round.
        z_norm: robust z-score of ``norm``.
        z_cosine: robust z-score of ``cosine``.
    """

    norm: np.ndarray
    cosine: np.ndarray
    z_norm: np.ndarray
    z_cosine: np.ndarray

    def flagged(self, threshold: float) -> np.ndarray:
        """Rows too large (``z_norm > t``) or pointing away (``z_cosine < −t``)."""
        return (self.z_norm > threshold) | (self.z_cosine < -threshold)


def anomaly_scores(updates: np.ndarray) -> AnomalyScores:
    """Norm, cosine to the round's coordinate-wise median, and their robust z-scores.

    Raises:
        ConfigError: not a 2-D batch of at least one row.
    """
    x = np.asarray(updates, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConfigError(f"anomaly scores need an (n, d) batch, got shape {x.shape}")
    norm = np.linalg.norm(x, axis=1)
    ref = np.median(x, axis=0)
    ref_norm = float(np.linalg.norm(ref))
    cos = np.einsum("id,d->i", x, ref) / np.maximum(norm * ref_norm, 1e-12)
    # cosines live in [-1, 1]: a floor of 1e-3 keeps a tight honest cluster from flagging
    return AnomalyScores(norm, cos, robust_z(norm), robust_z(cos, floor=1e-3))


@dataclass(frozen=True)
class ScreenedSum:
    """A plaintext summation that first scores every update and flags (or drops) outliers.

    Args:
        inner: the plaintext summation (``PlainSum`` or a ``RobustSum``).
        threshold: robust z-score beyond which an update is flagged.
        drop: leave flagged updates out of the sum (``False``: report only).
        norm_bound: leave updates with a larger L2 norm out (``None``: no bound).
        weight_column: rows are ``[w·u, w]`` (FedAvg weighting in front).

    Raises:
        ConfigError: a secure inner summation, or parameters out of range.
    """

    inner: Any
    threshold: float = 3.5
    drop: bool = False
    norm_bound: float | None = None
    weight_column: bool = False
    name: str = "anomaly"

    def __post_init__(self) -> None:
        inner_name = getattr(self.inner, "name", "")
        if inner_name in SECURE_SUMMATIONS or getattr(self.inner, "secure", False):
            from veil.aggregation.robust import secure_refusal

            raise ConfigError(
                secure_refusal("a per-update anomaly score", inner_name),
                key="aggregation.anomaly",
            )
        if not self.threshold > 0:
            raise ConfigError(
                f"anomaly threshold must be > 0, got {self.threshold}",
                key="aggregation.anomaly_threshold",
            )
        if self.norm_bound is not None and not self.norm_bound > 0:
            raise ConfigError(
                f"norm_bound must be > 0, got {self.norm_bound}", key="aggregation.norm_bound"
            )

    @property
    def stages(self) -> tuple[str, ...]:
        """The inner protocol's drop-out points."""
        return tuple(self.inner.stages)

    @property
    def returns(self) -> str:
        """What the inner protocol returns (``"sum"`` or a robust ``"mean"``)."""
        return str(getattr(self.inner, "returns", "sum"))

    def domain(self, upstream: Domain) -> Domain:
        """Float vectors (scores need values in the clear), then the inner protocol's domain."""
        expect(self.name, upstream, FLOAT)
        return summation_domain(self.inner, upstream)

    def check_chain(self, chain: Any) -> None:
        """The weight column must match the chain; no DP mechanism; then the inner check.

        Raises:
            ConfigError: a mismatched weight column, or a DP mechanism in ``chain``
                (per-update scores would be released outside it).
        """
        from veil.aggregation.plain import WeightedMean

        weighted = bool(chain.stages) and isinstance(chain.stages[-1], WeightedMean)
        if weighted != self.weight_column:
            raise ConfigError(
                f"summation {self.name!r}: weight_column = {self.weight_column} but the chain "
                f"{'ends' if weighted else 'does not end'} in a weighted mean",
                key="aggregation.anomaly",
            )
        mech = chain.mechanisms
        if mech:
            raise ConfigError(
                f"per-update anomaly scores do not go with stage {mech[0]!r}: which site was "
                "flagged depends on its update outside the DP mechanism; use clipping "
                "(it is in the DP stage) or turn aggregation.anomaly off",
                key="aggregation.anomaly",
            )
        vet = getattr(self.inner, "check_chain", None)
        if vet is not None:
            vet(chain)

    def screen(self, rows: np.ndarray) -> tuple[AnomalyScores, np.ndarray, np.ndarray]:
        """Scores of ``rows``, which are flagged, and which are over the norm bound."""
        x = np.asarray(rows, dtype=np.float64)
        if self.weight_column:
            w = x[:, -1:]
            x = x[:, :-1] / np.where(w > 0, w, 1.0)
        scores = anomaly_scores(x)
        over = (
            scores.norm > self.norm_bound
            if self.norm_bound is not None
            else np.zeros(len(x), dtype=bool)
        )
        return scores, scores.flagged(self.threshold), over

    def aggregate(
        self,
        encoded: np.ndarray,
        site_ids: np.ndarray,
        round: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> SumResult:
        """Score the rows that were sent, leave out those over the bound (and the flagged
        ones with ``drop``), and sum the rest with the inner protocol.

        Measurements: ``flagged``, ``over_bound``, ``left_out`` (counts), ``z_norm_max``,
        ``cosine_min``; then the inner protocol's, prefixed by its name.

        Raises:
            AbortError: every row was left out or dropped.
        """
        dropouts = dict(dropouts or {})
        ids = np.asarray(site_ids)
        sent = np.asarray([int(s) not in dropouts for s in ids], dtype=bool)
        if not sent.any():
            raise AbortError(f"round {round}: every site dropped out before sending")
        sent_ids = ids[sent]
        scores, flagged, over = self.screen(encoded[sent])
        out = over | (flagged if self.drop else np.zeros_like(flagged))
        if out.all():
            raise AbortError(
                f"round {round}: every update was left out by the anomaly screen"
            )
        for s in sent_ids[out]:
            dropouts[int(s)] = "before_send"
        res = self.inner.aggregate(encoded, ids, round, dropouts)
        per_site = encoded.shape[1] * 4 + 16
        bytes_sent = dict(res.bytes_sent)
        bytes_sent.update({int(s): per_site for s in sent_ids[out]})
        meas: dict[str, float] = {
            "flagged": float(flagged.sum()),
            "over_bound": float(over.sum()),
            "left_out": float(out.sum()),
            "z_norm_max": float(scores.z_norm.max()),
            "cosine_min": float(scores.cosine.min()),
        }
        meas.update({f"{self.inner.name}/{k}": float(v) for k, v in res.measurements.items()})
        return SumResult(
            total=res.total,
            survivors=res.survivors,
            bytes_sent=bytes_sent,
            bytes_received=res.bytes_received,
            measurements=meas,
            flagged=tuple(int(s) for s in sent_ids[flagged | over]),
        )
