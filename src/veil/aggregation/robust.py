"""Robust summation for plaintext aggregation: coordinate-wise median, trimmed mean, multi-Krum.

A robust rule replaces the *sum* of the summation protocol: it needs every site's update
in the clear, so it exists only for plaintext aggregation (the server of SecAgg+ or a CKKS
sum sees no single update; :func:`secure_refusal` says what works there). Each rule
returns a robust **mean** of the updates, not a sum (``returns = "mean"``), so
:meth:`RobustSum.check_chain` refuses a chain that would divide again (a weighted or uniform
mean stage) or that adds DP noise sized for a sum. The rules ignore the sites' example
counts (every update counts once).

With ``n`` updates ``u_1..u_n`` (rows) and ``f`` Byzantine sites:

* **median** (Yin et al. 2018): ``agg_j = median_i u_ij`` per coordinate. Breakdown point
  1/2: with ``f < n/2`` arbitrary rows, every coordinate stays inside the range of the
  honest rows' values.
* **trimmed mean** (β): per coordinate, drop the ``k = ⌊β·n⌋`` largest and ``k`` smallest
  values, average the ``n − 2k`` left. Bounded by the honest range when ``f ≤ k``.
* **multi-Krum** (Blanchard et al. 2017; El Mhamdi et al. 2018): the score of row ``i`` is
  the sum of squared distances to its ``n − f − 2`` nearest other rows; the ``m`` rows with
  the lowest scores are averaged. Needs ``n > 2f + 2``. ``m = 1`` is Krum.

What none of them protects against: attackers who are a majority (or more than ``k`` for
the trimmed mean, more than ``f`` for Krum); small, well-hidden perturbations inside the
honest spread (a backdoor that looks like a normal update); and they cost accuracy under
strongly non-IID data, where honest updates disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from veil.aggregation.base import FLOAT, Domain, SumResult, expect
from veil.errors import AbortError, ConfigError, LocalError

__all__ = [
    "RULES",
    "RobustSum",
    "coordinate_median",
    "trimmed_mean",
    "krum_scores",
    "multi_krum",
    "default_krum_f",
    "secure_refusal",
]

#: the rules by their config name (``aggregation.robust``)
RULES = ("median", "trimmed_mean", "multi_krum")


def _rows(updates: np.ndarray) -> np.ndarray:
    if not isinstance(updates, np.ndarray) or updates.ndim != 2 or updates.shape[0] == 0:
        raise LocalError(
            f"a robust rule needs a non-empty (n, d) batch, got {getattr(updates, 'shape', None)}"
        )
    return np.asarray(updates, dtype=np.float64)


def coordinate_median(updates: np.ndarray) -> np.ndarray:
    """Coordinate-wise median of the rows (the mean of the two middle values for even n).

    Raises:
        LocalError: not a non-empty 2-D batch.
    """
    return np.median(_rows(updates), axis=0)


def trimmed_mean(updates: np.ndarray, trim_fraction: float) -> np.ndarray:
    """Coordinate-wise β-trimmed mean: drop the ``⌊β·n⌋`` largest and smallest per coordinate.

    Raises:
        ConfigError: ``trim_fraction`` outside ``[0, 0.5)``.
        LocalError: not a non-empty 2-D batch.
    """
    if not 0.0 <= trim_fraction < 0.5:
        raise ConfigError(
            f"trim_fraction must be in [0, 0.5), got {trim_fraction}",
            key="aggregation.trim_fraction",
        )
    x = _rows(updates)
    n = x.shape[0]
    k = int(np.floor(trim_fraction * n))
    if n - 2 * k < 1:  # pragma: no cover - excluded by trim_fraction < 0.5
        raise AbortError(f"trimming {k} of {n} from each end leaves nothing")
    if k == 0:
        return x.mean(axis=0)
    return np.sort(x, axis=0)[k : n - k].mean(axis=0)


def _check_krum(n: int, f: int) -> None:
    if f < 0:
        raise ConfigError(f"krum_f must be >= 0, got {f}", key="aggregation.krum_f")
    if n <= 2 * f + 2:
        raise AbortError(
            f"multi-Krum with f = {f} needs more than {2 * f + 2} updates, got {n}; lower "
            "aggregation.krum_f or raise the cohort"
        )


def krum_scores(updates: np.ndarray, f: int) -> np.ndarray:
    """Krum score of each row: sum of squared L2 distances to its ``n − f − 2`` nearest rows.

    Raises:
        AbortError: ``n ≤ 2f + 2`` (too few updates for ``f``).
        ConfigError: ``f < 0``.
    """
    x = _rows(updates)
    n = x.shape[0]
    _check_krum(n, f)
    sq = np.einsum("ij,ij->i", x, x)
    # einsum, not BLAS matmul: a (n, n) Gram matrix is too small to gain from threads
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * np.einsum("id,jd->ij", x, x), 0.0)
    np.fill_diagonal(d2, np.inf)
    k = n - f - 2
    nearest = np.partition(d2, k - 1, axis=1)[:, :k]
    return nearest.sum(axis=1)


def multi_krum(updates: np.ndarray, f: int, m: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the ``m`` rows with the lowest Krum scores (``m`` defaults to ``n − f``).

    Returns:
        ``(mean, selected)`` with ``selected`` the row indices averaged (sorted).

    Raises:
        AbortError: ``n ≤ 2f + 2``.
        ConfigError: ``f < 0`` or ``m`` outside ``[1, n]``.
    """
    x = _rows(updates)
    n = x.shape[0]
    scores = krum_scores(x, f)
    m = n - f if m is None else int(m)
    if not 1 <= m <= n:
        raise ConfigError(f"krum_m must be in [1, {n}], got {m}", key="aggregation.krum_m")
    selected = np.sort(np.argsort(scores, kind="stable")[:m])
    return x[selected].mean(axis=0), selected


def default_krum_f(n: int) -> int:
    """The largest ``f`` multi-Krum allows for ``n`` updates (``n > 2f + 2``), at least 0."""
    return max(0, (int(n) - 3) // 2)


def secure_refusal(what: str, summation: str) -> str:
    """Why a per-update defence is refused under a secure summation, and what works there."""
    return (
        f"{what} needs each site's update, which the server never sees under "
        f"aggregation.summation = {summation!r} (it learns only the sum). What works there: "
        "clipping at honest sites (aggregation.clip_norm), the aggregate-level check "
        "(aggregation.aggregate_check = true: a round whose aggregate exceeds the clip bound "
        "is refused), and the malicious-secure SecAgg+ (docs/secure-aggregation.md); or set "
        "aggregation.summation = 'plain' to screen updates in the clear "
        "(docs/robust-aggregation.md)"
    )


@dataclass(frozen=True)
class RobustSum:
    """A robust rule in place of the plain sum: the server sees every row and returns a
    robust mean of them.

    Args:
        rule: ``"median"``, ``"trimmed_mean"`` or ``"multi_krum"``.
        trim_fraction: β of the trimmed mean.
        krum_f: Byzantine sites multi-Krum tolerates (``None``: the most the round's
            number of updates allows, :func:`default_krum_f`).
        krum_m: rows multi-Krum averages (``None``: ``n − f``).

    Raises:
        ConfigError: unknown rule or parameters out of range.
    """

    rule: str
    trim_fraction: float = 0.1
    krum_f: int | None = None
    krum_m: int | None = None
    name: str = "robust"
    wire_float_dtype: str = "float32"
    stages: ClassVar[tuple[str, ...]] = ("before_send",)
    #: what ``aggregate`` returns: a robust mean, not a sum (the chain must not divide)
    returns: ClassVar[str] = "mean"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ConfigError(
                f"unknown robust rule {self.rule!r}; choose one of {list(RULES)}",
                key="aggregation.robust",
            )
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ConfigError(
                f"trim_fraction must be in [0, 0.5), got {self.trim_fraction}",
                key="aggregation.trim_fraction",
            )
        if self.krum_f is not None and self.krum_f < 0:
            raise ConfigError(f"krum_f must be >= 0, got {self.krum_f}", key="aggregation.krum_f")
        if self.krum_m is not None and self.krum_m < 1:
            raise ConfigError(f"krum_m must be >= 1, got {self.krum_m}", key="aggregation.krum_m")

    def domain(self, upstream: Domain) -> Domain:
        """Float vectors only (a robust rule compares values; rings and ciphertexts hide them)."""
        expect(self.name, upstream, FLOAT)
        return FLOAT

    def check_chain(self, chain: Any) -> None:
        """Refuse stages that would divide the robust mean again or add sum-sized DP noise.

        Raises:
            ConfigError: a mean stage or a DP mechanism in ``chain``.
        """
        from veil.aggregation.plain import UniformMean, WeightedMean

        for t in chain.stages:
            if isinstance(t, (WeightedMean, UniformMean)):
                raise ConfigError(
                    f"summation {self.name!r} ({self.rule}) returns a robust mean, not a sum: "
                    f"stage {t.name!r} would divide it again; leave the mean stage out",
                    key="aggregation.robust",
                )
            if getattr(t, "dp", "") == "mechanism":
                raise ConfigError(
                    f"summation {self.name!r} ({self.rule}) does not go with stage {t.name!r}: "
                    "its DP noise is sized for the sensitivity of a sum, not of a robust rule; "
                    "use sample-level DP (DP-SGD at the sites) or aggregation.robust = 'none'",
                    key="aggregation.robust",
                )

    def combine(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rule applied to ``rows``; returns ``(robust mean, indices of rows it kept)``.

        For the median and the trimmed mean every row takes part (``kept`` is all rows).

        Raises:
            AbortError: too few rows for multi-Krum's ``f``.
        """
        n = rows.shape[0]
        if self.rule == "median":
            return coordinate_median(rows), np.arange(n)
        if self.rule == "trimmed_mean":
            return trimmed_mean(rows, self.trim_fraction), np.arange(n)
        f = default_krum_f(n) if self.krum_f is None else self.krum_f
        m = None if self.krum_m is None else min(self.krum_m, n)
        return multi_krum(rows, f, m)

    def aggregate(
        self,
        encoded: np.ndarray,
        site_ids: np.ndarray,
        round: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> SumResult:
        """The robust mean of the rows of the sites that did not drop before sending.

        Measurements: ``kept`` (rows the rule averaged; multi-Krum's ``m``), ``f``.

        Raises:
            AbortError: every site dropped out, or too few rows for multi-Krum.
        """
        dropouts = dropouts or {}
        ids = np.asarray(site_ids)
        keep = np.asarray([int(s) not in dropouts for s in ids], dtype=bool)
        survivors = ids[keep]
        if survivors.size == 0:
            raise AbortError(f"round {round}: every site dropped out before sending")
        wire = (encoded if keep.all() else encoded[keep]).astype(self.wire_float_dtype, copy=False)
        total, kept = self.combine(wire.astype(np.float64))
        per_site = wire.shape[1] * wire.dtype.itemsize + 16
        meas: dict[str, float] = {"kept": float(len(kept))}
        if self.rule == "multi_krum":
            n = len(survivors)
            meas["f"] = float(default_krum_f(n) if self.krum_f is None else self.krum_f)
        return SumResult(
            total=total,
            survivors=survivors,
            bytes_sent={int(s): per_site for s in survivors},
            measurements=meas,
        )
