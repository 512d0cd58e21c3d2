"""The aggregation interface every privacy mechanism plugs into.

An update leaves a site as a vector. On its way to the server model it passes a chain of
*transforms* (clip, noise, quantise, weight...) and one innermost *summation protocol*
(plain sum, SecAgg+, CKKS sum). This follows optax/TFF:

* A :class:`Transform` is a pair of pure-ish functions around explicit state:
  ``encode`` runs at each site (row-wise on a ``(n_sites, d)`` batch: row *i* depends only
  on site *i*'s update, the broadcast state and site *i*'s randomness), ``decode`` runs at
  the server on the aggregate and returns the new state, the decoded aggregate, scalar
  measurements and the :class:`dp_accounting.DpEvent` it spent this round (or ``None``).
* A :class:`SumProtocol` turns the encoded rows into their sum. Only it talks across the
  network (through the runtime's transport); transforms never see a message. It reports
  the bytes each site sent and which sites survived.
* A :class:`Pipeline` chains transforms (site order, first to last) around a summation
  protocol; the server decodes in reverse order (inside-out, as in TFF).

Batched encoding lets the in-process simulation run hundreds of sites in one numpy call
while each site's encoding stays what it would be alone; a deployed site calls the same
``encode`` with ``n_sites = 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from veil.errors import InvalidUpdateError, LocalError

__all__ = [
    "EncodeContext",
    "DecodeContext",
    "Transform",
    "SumProtocol",
    "SumResult",
    "Pipeline",
    "PipelineState",
    "RoundResult",
    "check_updates",
]

S = TypeVar("S")


@dataclass(frozen=True)
class EncodeContext:
    """What a site knows when it encodes its update.

    Attributes:
        round: zero-based round number.
        site_ids: global ids of the sites in this batch (one per row).
        weights: per-site weight (e.g. number of local examples), shape ``(n_sites,)``.
        rng: the source of privacy randomness for these sites (a CSPRNG stream; see
            :mod:`veil.crypto.prg`). ``None`` when no transform needs randomness.
        cohort_size: number of sites selected for this round (before dropouts).
    """

    round: int
    site_ids: np.ndarray
    weights: np.ndarray
    rng: Any = None
    cohort_size: int = 0


@dataclass(frozen=True)
class DecodeContext:
    """What the server knows when it decodes the aggregate.

    Attributes:
        round: zero-based round number.
        survivors: ids of the sites whose input is in the sum.
        cohort_size: number of sites selected for this round (before dropouts).
        rng: server-side privacy randomness (central DP noise).
    """

    round: int
    survivors: np.ndarray
    cohort_size: int
    rng: Any = None


@runtime_checkable
class Transform(Protocol[S]):
    """A site-side encode paired with a server-side decode (one privacy/compression step).

    Implementations are small frozen dataclasses holding their hyper-parameters; all
    mutable information (adaptive clip norm, error feedback, round keys) lives in the state
    returned by :meth:`init` and passed back in each round.
    """

    @property
    def name(self) -> str:
        """Unique stage name (prefixes its measurements)."""
        ...

    def init(self) -> S:
        """Return the initial state (broadcast to sites at round start)."""
        ...

    def encode(
        self, state: S, updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        """Encode a batch of site updates, shape ``(n_sites, d)`` → ``(n_sites, d')``.

        Returns the encoded rows and per-site measurements (arrays of length ``n_sites``,
        e.g. whether each site's update was clipped). Row *i* must depend only on row *i*.
        """
        ...

    def decode(
        self, state: S, aggregate: np.ndarray, ctx: DecodeContext
    ) -> tuple[S, np.ndarray, Mapping[str, float], Any]:
        """Decode the aggregate at the server.

        Returns ``(new_state, decoded, measurements, dp_event)`` where ``dp_event`` is a
        :class:`dp_accounting.DpEvent` for what this round spent, or ``None``.
        """
        ...


@dataclass(frozen=True)
class SumResult:
    """What the summation protocol hands the server.

    Attributes:
        total: the sum of the survivors' encoded rows (same dtype semantics as the rows:
            float sums for float rows, sums modulo 2**bits for integer rows).
        survivors: ids of the sites whose rows are in ``total``.
        bytes_sent: bytes each site sent during the protocol, keyed by site id.
        bytes_received: bytes each site received, keyed by site id.
        measurements: protocol-level numbers (server time, messages, aborts...).
    """

    total: np.ndarray
    survivors: np.ndarray
    bytes_sent: Mapping[int, int]
    bytes_received: Mapping[int, int] = field(default_factory=dict)
    measurements: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class SumProtocol(Protocol):
    """Innermost aggregator: computes the sum of the sites' encoded rows.

    ``dropouts`` lets the simulation drop sites during the protocol (SecAgg+ recovers from
    them); a plain sum just leaves the dropped rows out.
    """

    @property
    def name(self) -> str:
        """Protocol name (prefixes its measurements)."""
        ...

    def aggregate(
        self,
        encoded: np.ndarray,
        site_ids: np.ndarray,
        round: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> SumResult:
        """Sum ``encoded`` (shape ``(n_sites, d')``), row ``i`` coming from ``site_ids[i]``.

        Args:
            encoded: one encoded row per site.
            site_ids: global site ids, one per row.
            round: round number (protocols bind their messages to it).
            dropouts: optional ``{site_id: stage}`` naming sites that go silent at a stage
                of the protocol (protocol-specific stage names; ``"before_send"`` is
                understood by every protocol).
        """
        ...


@dataclass(frozen=True)
class PipelineState:
    """States of each transform, in pipeline order (typed access via Pipeline.state_of)."""

    transforms: tuple[Any, ...]


@dataclass(frozen=True)
class RoundResult:
    """Everything one aggregation round produced.

    Attributes:
        aggregate: the decoded server-side aggregate (float64, shape ``(d,)``).
        survivors: ids of the sites whose update is in the aggregate.
        bytes_sent: per-site bytes sent this round.
        measurements: merged scalar measurements, keys prefixed by the stage name.
        dp_events: the DP events spent this round, one per transform that spent any.
    """

    aggregate: np.ndarray
    survivors: np.ndarray
    bytes_sent: Mapping[int, int]
    measurements: dict[str, float]
    dp_events: tuple[Any, ...]


def check_updates(updates: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Validate a batch of updates: 2-D, finite, expected width.

    Args:
        updates: array of shape ``(n_sites, d)``.
        dim: expected ``d`` (optional).

    Returns:
        A boolean mask of rows that are usable (all finite).

    Raises:
        LocalError: if the batch is not 2-D or has the wrong width (a caller bug).
    """
    if not isinstance(updates, np.ndarray) or updates.ndim != 2:
        raise LocalError(
            f"updates must be a 2-D array (n_sites, d), got {getattr(updates, 'shape', None)}"
        )
    if dim is not None and updates.shape[1] != dim:
        raise LocalError(f"updates have width {updates.shape[1]}, expected {dim}")
    if np.issubdtype(updates.dtype, np.floating):
        # a row is finite iff its sum is finite (inf - inf = nan); full scan only if not
        ok = np.isfinite(updates.sum(axis=1, dtype=np.float64))
        if ok.all():
            return ok
        return np.isfinite(updates).all(axis=1)
    return np.ones(updates.shape[0], dtype=bool)


class Pipeline:
    """Transforms (site order) around one summation protocol.

    Example:
        >>> from veil.aggregation import Pipeline, Clip, WeightedMean, PlainSum
        >>> p = Pipeline([Clip(1.0), WeightedMean()], PlainSum())
    """

    def __init__(self, transforms: Sequence[Transform[Any]], summation: SumProtocol) -> None:
        names = [t.name for t in transforms]
        if len(set(names)) != len(names):
            raise LocalError(f"transform names must be unique in a pipeline, got {names}")
        self.transforms: tuple[Transform[Any], ...] = tuple(transforms)
        self.summation = summation

    def __repr__(self) -> str:
        inner = " → ".join(t.name for t in self.transforms)
        return f"Pipeline({inner} → {self.summation.name})"

    def describe(self) -> list[str]:
        """Names of the stages, site side first, then the summation protocol."""
        return [t.name for t in self.transforms] + [self.summation.name]

    def init(self) -> PipelineState:
        """Initial state of every transform."""
        return PipelineState(tuple(t.init() for t in self.transforms))

    def state_of(self, state: PipelineState, kind: type[Any] | str) -> Any:
        """Typed accessor: the state of the (first) transform of class or name ``kind``."""
        for t, s in zip(self.transforms, state.transforms):
            if (isinstance(kind, str) and t.name == kind) or (
                not isinstance(kind, str) and isinstance(t, kind)
            ):
                return s
        raise LocalError(f"no transform {kind!r} in {self!r}")

    def encode(
        self, state: PipelineState, updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Run every transform's site side on a batch of updates."""
        x = updates
        meas: dict[str, float] = {}
        for t, s in zip(self.transforms, state.transforms):
            x, m = t.encode(s, x, ctx)
            for k, v in m.items():
                meas[f"{t.name}/{k}"] = float(np.mean(v)) if np.size(v) else 0.0
        return x, meas

    def decode(
        self, state: PipelineState, total: np.ndarray, ctx: DecodeContext
    ) -> tuple[PipelineState, np.ndarray, dict[str, float], tuple[Any, ...]]:
        """Run every transform's server side, innermost (last) first."""
        x = total
        new_states = list(state.transforms)
        meas: dict[str, float] = {}
        events: list[Any] = []
        for i in reversed(range(len(self.transforms))):
            t = self.transforms[i]
            new_states[i], x, m, ev = t.decode(state.transforms[i], x, ctx)
            meas.update({f"{t.name}/{k}": float(v) for k, v in m.items()})
            if ev is not None:
                events.append(ev)
        return (
            PipelineState(tuple(new_states)),
            np.asarray(x, dtype=np.float64),
            meas,
            tuple(events),
        )

    def run_round(
        self,
        state: PipelineState,
        updates: np.ndarray,
        ctx: EncodeContext,
        server_rng: Any = None,
        dropouts: Mapping[int, str] | None = None,
    ) -> tuple[PipelineState, RoundResult]:
        """One full round in process: encode at every site, sum, decode at the server.

        Rows containing NaN/inf are rejected before encoding (that site is treated as
        dropped for this round); the round continues with the sites that behaved.

        Raises:
            InvalidUpdateError: if no site sent a usable update.
            AbortError: from the summation protocol (e.g. too few survivors).
        """
        ok = check_updates(updates)
        site_ids = np.asarray(ctx.site_ids)
        rejected = site_ids[~ok]
        if not ok.any():
            raise InvalidUpdateError(
                f"round {ctx.round}: every site's update contained NaN/inf; nothing to aggregate"
            )
        if not ok.all():
            updates = updates[ok]
            ctx = EncodeContext(
                round=ctx.round,
                site_ids=site_ids[ok],
                weights=np.asarray(ctx.weights)[ok],
                rng=ctx.rng,
                cohort_size=ctx.cohort_size,
            )
        encoded, meas = self.encode(state, updates, ctx)
        res = self.summation.aggregate(encoded, ctx.site_ids, ctx.round, dropouts)
        dctx = DecodeContext(
            round=ctx.round, survivors=res.survivors, cohort_size=ctx.cohort_size, rng=server_rng
        )
        new_state, agg, dmeas, events = self.decode(state, res.total, dctx)
        meas.update(dmeas)
        meas.update({f"{self.summation.name}/{k}": float(v) for k, v in res.measurements.items()})
        meas["rejected_sites"] = float(rejected.size)
        meas["survivors"] = float(len(res.survivors))
        return new_state, RoundResult(agg, res.survivors, dict(res.bytes_sent), meas, events)
