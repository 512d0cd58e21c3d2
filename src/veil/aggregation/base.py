"""The aggregation interface every privacy mechanism plugs into.

An update leaves a site as a float vector. On its way to the server model it passes a
chain of *stages* (clip, noise, quantise, weight...) and one innermost *summation
protocol* (plain sum, SecAgg+, CKKS sum). This follows optax and TFF:

* A :class:`Transform` (a stage) is a value: hyper-parameters in a frozen dataclass, all
  mutable information in explicit state — the server state (``init``, broadcast to the
  sites each round, updated by ``decode``) and each site's own state (``init_site``: error
  feedback, keys), handed to ``encode`` and returned by it. ``encode`` runs at the sites,
  row-wise on a ``(n_sites, d)`` batch: row *i* depends only on site *i*'s update, state
  and privacy randomness (``ctx.rngs[i]``); ``decode`` runs at the server on the aggregate
  and returns the new state, the decoded aggregate, scalar measurements and the
  :class:`dp_accounting.DpEvent` it spent (or ``None``).
* Each stage declares its :class:`Domain` — what it accepts and what it emits (float
  vectors, the ring Z_2^b, ciphertexts) — with :meth:`Transform.domain`.
* A :class:`Chain` of stages is itself a stage (optax ``chain``): encode in order, decode
  in reverse (inside-out, as in TFF). Building one checks that neighbours fit and refuses a
  misfit naming both stages; it also refuses stages that are not for DP (a data-dependent
  weight) in a chain that claims DP.
* A :class:`SumProtocol` turns the encoded rows into their sum. Only it talks across the
  network; stages never see a message. A :class:`Pipeline` is a chain around one summation
  protocol.

Batched encoding lets the in-process simulation run hundreds of sites in one numpy call
while each site's encoding stays what it would be alone; a deployed site calls the same
``encode`` with one row, its own state and its own stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from veil.errors import ConfigError, InvalidUpdateError, LocalError

__all__ = [
    "Domain",
    "FLOAT",
    "CIPHERTEXT",
    "ring",
    "Misfit",
    "EncodeContext",
    "DecodeContext",
    "Transform",
    "Chain",
    "SumProtocol",
    "SumResult",
    "Pipeline",
    "PipelineState",
    "RoundResult",
    "check_updates",
]

S = TypeVar("S")


@dataclass(frozen=True)
class Domain:
    """What flows between two stages.

    Attributes:
        kind: ``"float"`` (real vectors), ``"ring"`` (integers mod 2^bits) or
            ``"ciphertext"``.
        bits: the ring width b (``"ring"`` only).
    """

    kind: str
    bits: int | None = None

    def __str__(self) -> str:
        return f"ring Z_2^{self.bits}" if self.kind == "ring" else f"{self.kind} vectors"


FLOAT = Domain("float")
CIPHERTEXT = Domain("ciphertext")


def ring(bits: int) -> Domain:
    """The domain Z_2^bits."""
    return Domain("ring", int(bits))


class Misfit(ConfigError):
    """A stage cannot take its upstream neighbour's output (raised by ``domain``)."""


def expect(stage: str, got: Domain, want: Domain) -> None:
    """Raise :class:`Misfit` unless ``got == want`` (for a stage's ``domain`` method)."""
    if got != want:
        raise Misfit(f"{stage} takes {want}, not {got}")


@dataclass(frozen=True)
class EncodeContext:
    """What the sites know when they encode their updates.

    Attributes:
        round: zero-based round number.
        site_ids: global ids of the sites in this batch (one per row).
        weights: per-site weight (e.g. number of local examples), shape ``(n_sites,)``.
        rng: one stream for the batch, split into one stream per site (HKDF over a key
            drawn from it once, labelled by the site id) — or, for a one-row batch, that
            site's own stream. ``None`` when ``rngs`` is given or nothing needs randomness.
        cohort_size: number of sites selected for this round (before dropouts).
        rngs: each row's own privacy stream (a CSPRNG stream per site, see
            :mod:`veil.training.streams`); what the simulation passes.
    """

    round: int
    site_ids: np.ndarray
    weights: np.ndarray
    rng: Any = None
    cohort_size: int = 0
    rngs: Sequence[Any] | None = None
    _split: dict[int, Any] = field(default_factory=dict, compare=False, repr=False)

    def row_rng(self, i: int, stage: str) -> Any:
        """Row ``i``'s privacy stream (the same object every time it is asked for).

        Raises:
            LocalError: no privacy randomness was given.
        """
        if self.rngs is not None:
            return self.rngs[i]
        if self.rng is None:
            raise LocalError(
                f"{stage} needs each site's own privacy stream: pass EncodeContext.rngs "
                "(one veil.crypto.SecureRng per row) or rng"
            )
        if len(self.site_ids) == 1:
            return self.rng
        if not self._split:
            from veil.crypto.prg import SecureRng, derive_key

            master = self.rng.bytes(32)
            for j, sid in enumerate(np.asarray(self.site_ids)):
                key = derive_key(master, f"veil/encode/site/{int(sid)}")
                self._split[j] = SecureRng(key, reproducible=self.rng.reproducible)
        return self._split[i]


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
    mutable information lives in the server state (:meth:`init`) and each site's state
    (:meth:`init_site`), passed in and returned every round. ``dp = "mechanism"`` marks a
    stage that spends privacy, ``dp = "unsafe"`` one whose output depends on private data
    outside any mechanism (refused in a DP chain).
    """

    @property
    def name(self) -> str:
        """Unique stage name (prefixes its measurements)."""
        ...

    def domain(self, upstream: Domain) -> Domain:
        """The domain this stage emits given what it receives.

        Raises:
            Misfit: it cannot take ``upstream``.
        """
        ...

    def init(self) -> S:
        """Return the initial server state (broadcast to sites at round start)."""
        ...

    def init_site(self) -> Any:
        """Return a site's initial own state (``None`` for stages without one)."""
        ...

    def encode(
        self, state: S, site_states: list[Any], updates: np.ndarray, ctx: EncodeContext
    ) -> tuple[np.ndarray, list[Any], Mapping[str, np.ndarray]]:
        """Encode a batch of site updates, shape ``(n_sites, d)`` → ``(n_sites, d')``.

        Args:
            state: the broadcast server state.
            site_states: each row's own site state.
            updates: one row per site.
            ctx: round, ids, weights and each row's privacy stream.

        Returns:
            The encoded rows, each row's new site state, and per-site measurements
            (arrays of length ``n_sites``). Row *i* depends only on row *i*.
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


class SiteStateless:
    """Mixin for stages that keep no per-site state."""

    def init_site(self) -> None:
        """No per-site state."""
        return None


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
        flagged: ids of the sites whose update a plaintext screen flagged as anomalous
            (:mod:`veil.aggregation.anomaly`; empty for every other protocol).
    """

    total: np.ndarray
    survivors: np.ndarray
    bytes_sent: Mapping[int, int]
    bytes_received: Mapping[int, int] = field(default_factory=dict)
    measurements: Mapping[str, float] = field(default_factory=dict)
    flagged: tuple[int, ...] = ()


@runtime_checkable
class SumProtocol(Protocol):
    """Innermost aggregator: computes the sum of the sites' encoded rows.

    ``dropouts`` lets the simulation drop sites during the protocol (SecAgg+ recovers from
    them); a plain sum just leaves the dropped rows out. ``stages`` names the points at
    which a site may go silent. A protocol declares what it sums with a
    ``domain(upstream) -> Domain`` method (see :func:`summation_domain`). A protocol may
    also vet the whole chain in front of it with ``check_chain(chain)`` (raising
    :class:`~veil.errors.ConfigError`): a robust rule, which returns a robust *mean*
    rather than a sum, refuses a chain that would divide again.
    """

    stages: tuple[str, ...]

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


def summation_domain(summation: Any, upstream: Domain) -> Domain:
    """The sum's domain. A protocol that declares none but has ``bits`` sums Z_2^bits."""
    if hasattr(summation, "domain"):
        return summation.domain(upstream)
    bits = getattr(summation, "bits", None)
    if isinstance(bits, int):
        expect(summation.name, upstream, ring(bits))
    return upstream


@dataclass(frozen=True)
class PipelineState:
    """Server states of each stage, in chain order (typed access via Chain.state_of)."""

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
        flagged: ids of the sites the summation flagged as anomalous (plaintext only).
    """

    aggregate: np.ndarray
    survivors: np.ndarray
    bytes_sent: Mapping[int, int]
    measurements: dict[str, float]
    dp_events: tuple[Any, ...]
    flagged: tuple[int, ...] = ()


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


class Chain:
    """Stages applied in order at the sites and undone in reverse at the server; a chain is
    itself a stage (its states are tuples of its stages' states).

    Args:
        stages: the stages, site order (nested chains are flattened).
        upstream: the domain fed into the first stage (float updates).

    Raises:
        ConfigError: duplicate names, neighbours that do not fit (the message names both
            stages), or a stage that is not for DP in a chain with a DP mechanism.
    """

    def __init__(self, stages: Sequence[Any], upstream: Domain = FLOAT) -> None:
        flat: list[Any] = []
        for s in stages:
            flat.extend(s.stages if isinstance(s, Chain) else [s])
        names = [t.name for t in flat]
        if len(set(names)) != len(names):
            raise LocalError(f"stage names must be unique in a chain, got {names}")
        self.stages: tuple[Any, ...] = tuple(flat)
        self.upstream = upstream
        self.output = self._check(upstream)
        unsafe = [t.name for t in flat if getattr(t, "dp", "") == "unsafe"]
        mech = self.mechanisms
        if unsafe and mech:
            raise ConfigError(
                f"stage {unsafe[0]!r} is not for differentially private pipelines (its output "
                f"depends on private data outside the mechanism of {mech[0]!r}); use "
                "uniform_mean or the DP stages, which divide by a fixed denominator",
                key="aggregation",
            )

    @property
    def name(self) -> str:
        """``a+b+c``."""
        return "+".join(t.name for t in self.stages)

    @property
    def mechanisms(self) -> list[str]:
        """Names of the stages that spend privacy (``dp = "mechanism"``), in order."""
        return [t.name for t in self.stages if getattr(t, "dp", "") == "mechanism"]

    @property
    def dp(self) -> str:
        """``"mechanism"`` if any stage spends privacy."""
        return "mechanism" if self.mechanisms else ""

    def _check(self, d: Domain) -> Domain:
        prev = "the site's update"
        for t in self.stages:
            try:
                d = t.domain(d)
            except Misfit as e:
                raise ConfigError(
                    f"stage {t.name!r} cannot follow {prev}: {e}", key="aggregation"
                ) from None
            prev = f"stage {t.name!r}"
        return d

    def domain(self, upstream: Domain) -> Domain:
        """The last stage's output for ``upstream`` input."""
        return self._check(upstream)

    def __repr__(self) -> str:
        return f"Chain({' → '.join(t.name for t in self.stages)})"

    def init(self) -> PipelineState:
        """Initial server state of every stage."""
        return PipelineState(tuple(t.init() for t in self.stages))

    def init_site(self) -> tuple[Any, ...]:
        """A site's initial own state for every stage."""
        return tuple(t.init_site() for t in self.stages)

    def state_of(self, state: PipelineState, kind: type[Any] | str) -> Any:
        """Typed accessor: the state of the (first) stage of class or name ``kind``.

        Raises:
            LocalError: no such stage.
        """
        for t, s in zip(self.stages, state.transforms):
            if (isinstance(kind, str) and t.name == kind) or (
                not isinstance(kind, str) and isinstance(t, kind)
            ):
                return s
        raise LocalError(f"no stage {kind!r} in {self!r}")

    def encode(
        self,
        state: PipelineState,
        site_states: list[Any],
        updates: np.ndarray,
        ctx: EncodeContext,
    ) -> tuple[np.ndarray, list[Any], dict[str, np.ndarray]]:
        """Every stage's site side, in order; per-site states travel per stage."""
        x = updates
        meas: dict[str, np.ndarray] = {}
        per_stage = [list(col) for col in zip(*site_states)] if site_states else [
            [] for _ in self.stages
        ]
        for k, (t, s) in enumerate(zip(self.stages, state.transforms)):
            x, per_stage[k], m = t.encode(s, per_stage[k], x, ctx)
            for key, v in m.items():
                meas[f"{t.name}/{key}"] = np.asarray(v)
        return x, [tuple(row) for row in zip(*per_stage)], meas

    def decode(
        self, state: PipelineState, total: np.ndarray, ctx: DecodeContext
    ) -> tuple[PipelineState, np.ndarray, dict[str, float], tuple[Any, ...]]:
        """Every stage's server side, innermost (last) first; the events they spent."""
        x = total
        new_states = list(state.transforms)
        meas: dict[str, float] = {}
        events: list[Any] = []
        for i in reversed(range(len(self.stages))):
            t = self.stages[i]
            new_states[i], x, m, ev = t.decode(state.transforms[i], x, ctx)
            meas.update({f"{t.name}/{k}": float(v) for k, v in m.items()})
            if ev is not None:
                events.append(ev)
        return PipelineState(tuple(new_states)), x, meas, tuple(events)


class Pipeline:
    """A chain of stages (site order) around one summation protocol.

    Example:
        >>> from veil.aggregation import Pipeline, Clip, WeightedMean, PlainSum
        >>> p = Pipeline([Clip(1.0), WeightedMean()], PlainSum())

    Raises:
        ConfigError: the chain's stages do not fit each other or the summation protocol
            (the message names both).
    """

    def __init__(self, transforms: Sequence[Any] | Chain, summation: SumProtocol) -> None:
        self.chain = transforms if isinstance(transforms, Chain) else Chain(transforms)
        self.transforms: tuple[Any, ...] = self.chain.stages
        self.summation = summation
        last = f"stage {self.transforms[-1].name!r}" if self.transforms else "the site's update"
        try:
            summation_domain(summation, self.chain.output)
        except Misfit as e:
            raise ConfigError(
                f"summation {summation.name!r} cannot follow {last}: {e}", key="aggregation"
            ) from None
        vet = getattr(summation, "check_chain", None)
        if vet is not None:
            vet(self.chain)

    def __repr__(self) -> str:
        inner = " → ".join(t.name for t in self.transforms)
        return f"Pipeline({inner} → {self.summation.name})"

    def describe(self) -> list[str]:
        """Names of the stages, site side first, then the summation protocol."""
        return [t.name for t in self.transforms] + [self.summation.name]

    def init(self) -> PipelineState:
        """Initial server state of every stage."""
        return self.chain.init()

    def init_site(self) -> tuple[Any, ...]:
        """A site's initial own state for every stage."""
        return self.chain.init_site()

    def state_of(self, state: PipelineState, kind: type[Any] | str) -> Any:
        """Typed accessor: the state of the (first) stage of class or name ``kind``."""
        return self.chain.state_of(state, kind)

    def encode(
        self,
        state: PipelineState,
        updates: np.ndarray,
        ctx: EncodeContext,
        site_states: list[Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Every stage's site side (sites' own states fresh unless given); mean measurements."""
        x, _, meas = self.encode_sites(state, site_states, updates, ctx)
        return x, meas

    def encode_sites(
        self,
        state: PipelineState,
        site_states: list[Any] | None,
        updates: np.ndarray,
        ctx: EncodeContext,
    ) -> tuple[np.ndarray, list[Any], dict[str, float]]:
        """Every stage's site side with each row's own state; returns the new states.

        Raises:
            LocalError: not one site state per row.
        """
        n = updates.shape[0]
        if site_states is None:
            site_states = [self.init_site() for _ in range(n)]
        if len(site_states) != n:
            raise LocalError(f"{len(site_states)} site states for {n} rows")
        x, new, m = self.chain.encode(state, list(site_states), updates, ctx)
        meas = {k: float(np.mean(v)) if np.size(v) else 0.0 for k, v in m.items()}
        return x, new, meas

    def decode(
        self, state: PipelineState, total: np.ndarray, ctx: DecodeContext
    ) -> tuple[PipelineState, np.ndarray, dict[str, float], tuple[Any, ...]]:
        """Every stage's server side, innermost (last) first."""
        st, x, meas, events = self.chain.decode(state, total, ctx)
        return st, np.asarray(x, dtype=np.float64), meas, events

    def aggregate(
        self,
        state: PipelineState,
        encoded: np.ndarray,
        site_ids: np.ndarray,
        round: int,
        cohort_size: int,
        server_rng: Any = None,
        dropouts: Mapping[int, str] | None = None,
    ) -> tuple[PipelineState, RoundResult]:
        """The server side of a round: sum the encoded rows, decode, collect events.

        Raises:
            AbortError: from the summation protocol (e.g. too few survivors).
        """
        res = self.summation.aggregate(encoded, site_ids, round, dropouts)
        dctx = DecodeContext(
            round=round, survivors=res.survivors, cohort_size=cohort_size, rng=server_rng
        )
        new_state, agg, meas, events = self.decode(state, res.total, dctx)
        meas.update({f"{self.summation.name}/{k}": float(v) for k, v in res.measurements.items()})
        meas["survivors"] = float(len(res.survivors))
        return new_state, RoundResult(
            agg, res.survivors, dict(res.bytes_sent), meas, events, tuple(res.flagged)
        )

    def run_round(
        self,
        state: PipelineState,
        updates: np.ndarray,
        ctx: EncodeContext,
        server_rng: Any = None,
        dropouts: Mapping[int, str] | None = None,
        site_states: list[Any] | None = None,
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
        if not ok.any():
            raise InvalidUpdateError(
                f"round {ctx.round}: every site's update contained NaN/inf; nothing to aggregate"
            )
        if not ok.all():
            updates = updates[ok]
            keep = np.flatnonzero(ok)
            ctx = EncodeContext(
                round=ctx.round,
                site_ids=site_ids[ok],
                weights=np.asarray(ctx.weights)[ok],
                rng=ctx.rng,
                cohort_size=ctx.cohort_size,
                rngs=None if ctx.rngs is None else [ctx.rngs[i] for i in keep],
            )
            if site_states is not None:
                site_states = [site_states[i] for i in keep]
        encoded, _, meas = self.encode_sites(state, site_states, updates, ctx)
        new_state, res = self.aggregate(
            state, encoded, ctx.site_ids, ctx.round, ctx.cohort_size, server_rng, dropouts
        )
        res.measurements.update(meas)
        res.measurements["rejected_sites"] = float((~ok).sum())
        return new_state, res
