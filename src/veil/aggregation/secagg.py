"""SecAgg+ as a summation protocol, run by the in-process driver.

:class:`SecAggSum` implements :class:`~veil.aggregation.base.SumProtocol`: it builds one
:class:`~veil.protocols.secagg.SecAggClient` per site and a
:class:`~veil.protocols.secagg.SecAggServer` and hands them to
:func:`veil.transport.driver.drive`, which moves *bytes only* between them and owns the
clock: a site scheduled to drop at a stage, a site whose machine failed, or a site whose
handler runs past ``stage_deadline_s`` is silent, and the server closes the stage without
it — nothing ever waits forever.

Example:
    >>> from veil.aggregation.base import Pipeline
    >>> from veil.aggregation.quantize import Quantize
    >>> from veil.aggregation.secagg import SecAggSum
    >>> p = Pipeline([Quantize(clip=1.0, bits=32)], SecAggSum(bits=32))
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from veil.aggregation.base import SumResult
from veil.crypto.identity import Roster, SiteIdentity
from veil.crypto.prg import derive_key
from veil.crypto import ring
from veil.errors import ConfigError, InvalidUpdateError, LocalError
from veil.protocols.secagg import (
    SERVER,
    STAGES,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    choose_k,
    site_name,
    site_of,
)
from veil.protocols.secagg.graph import MODELS, check_malicious, corrupt_bound
from veil.protocols.secagg.server import SecAggOutput
from veil.transport.driver import DEFAULT_STAGE_DEADLINE_S, drive
from veil.transport.driver import Tamper as DriverTamper
from veil.transport.sidechannels import OFF, SideChannels

__all__ = ["SecAggSum", "RoundTrace", "run_round"]

#: tamper(stage, site, direction "up"/"down", data) → bytes to deliver, or None to drop
Tamper = Callable[[str, int, str, bytes], "bytes | None"]


@dataclass
class RoundTrace:
    """What the in-process transport saw during one round.

    Attributes:
        bytes_sent / bytes_received: per site.
        site_time_s: per site, seconds spent inside its state machine, per stage.
        server_time_s: seconds inside the server, per stage.
        dropped: site → stage at which it went silent.
        errors: (party, stage, error type) of refused messages / failed machines.
        words_expanded: PRG words each site expanded while masking.
    """

    bytes_sent: dict[int, int] = field(default_factory=dict)
    bytes_received: dict[int, int] = field(default_factory=dict)
    site_time_s: dict[int, dict[str, float]] = field(default_factory=dict)
    server_time_s: dict[str, float] = field(default_factory=dict)
    dropped: dict[int, str] = field(default_factory=dict)
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    words_expanded: dict[int, int] = field(default_factory=dict)

    def critical_path_s(self) -> float:
        """Modelled deployment latency: sites compute in parallel, so each stage costs its
        slowest site plus the server (network time not included). The simulation itself
        runs every site one after another (its wall time is the sum, not this)."""
        crit = 0.0
        for stage in STAGES:
            site_max = max((t.get(stage, 0.0) for t in self.site_time_s.values()), default=0.0)
            crit += site_max + self.server_time_s.get(stage, 0.0)
        return crit


def run_round(
    config: SecAggConfig,
    inputs: Callable[[int], np.ndarray],
    dropouts: Mapping[int, str] | None = None,
    stage_deadline_s: float | None = None,
    tamper: Tamper | None = None,
    identities: Mapping[int, SiteIdentity] | None = None,
    side_channels: SideChannels = OFF,
) -> tuple[SecAggOutput, RoundTrace]:
    """Run one SecAgg+ round in process through :func:`veil.transport.driver.drive`.

    Args:
        config: public round parameters.
        inputs: site id → its integer input vector (called once per site, lazily).
        dropouts: site id → stage name (one of :data:`~veil.protocols.secagg.STAGES`) at
            which the site goes silent.
        stage_deadline_s: a site whose handler takes longer than this in a stage is
            dropped (None: the driver's default,
            :data:`~veil.transport.driver.DEFAULT_STAGE_DEADLINE_S`).
        tamper: test hook to alter or drop bytes in transit.
        identities: each site's signing key (required when ``config.roster`` is set: the
            malicious-server mode).
        side_channels: the driver's fixed deadlines (shuffled delivery to the server) and
            random site delays (message padding is ``config.pad_messages``).

    Returns:
        The server's output and the trace.

    Raises:
        AbortError: too few sites at some stage; no partial result.
        ConfigError: unknown stage names in ``dropouts``.
    """
    server = SecAggServer(config)
    ids = identities or {}
    clients = {
        u: SecAggClient(config, u, functools.partial(inputs, u), ids.get(u))
        for u in config.site_ids
    }

    hook: DriverTamper | None = None
    if tamper is not None:
        def hook(stage: str, sender: str, receiver: str, data: bytes) -> bytes | None:
            up = receiver == SERVER
            return tamper(stage, site_of(sender if up else receiver), "up" if up else "down", data)

    dt = drive(
        [server, *clients.values()],
        stage_deadline_s=DEFAULT_STAGE_DEADLINE_S if stage_deadline_s is None else stage_deadline_s,
        drops={site_name(u): s for u, s in (dropouts or {}).items()},
        tamper=hook,
        stages=STAGES,
        side_channels=side_channels,
    )
    trace = RoundTrace(
        bytes_sent={u: dt.bytes_sent[site_name(u)] for u in clients},
        bytes_received={u: dt.bytes_received[site_name(u)] for u in clients},
        site_time_s={u: dt.time_s[site_name(u)] for u in clients},
        server_time_s=dt.time_s[SERVER],
        dropped={site_of(p): s for p, s in dt.dropped.items()},
        errors=[(p if p == SERVER else f"site {p}", s, e) for p, s, e in dt.errors],
        words_expanded={u: c.words_expanded for u, c in clients.items()},
    )
    if server.result is None:  # pragma: no cover - the last deadline aborts or sets it
        raise LocalError("SecAgg round ended without a result")
    return server.result, trace


@dataclass(frozen=True)
class SecAggSum:
    """SecAgg+ summation of integer rows modulo 2^bits.

    Args:
        bits: ring width b; rows are reduced mod 2^b (use :class:`Quantize` before it).
        k: neighbours per site; ``None`` picks it with
            :func:`~veil.protocols.secagg.choose_k` from ``dropout`` and ``corrupt``.
            ``k ≥ n − 1`` is classic SecAgg.
        threshold: shares needed per secret; ``None`` takes the value chosen with k
            (or ⌊k/2⌋ + 1 when k is given).
        dropout: expected fraction of sites that drop out (for choosing k).
        corrupt: tolerated fraction of colluding sites (for choosing k).
        stage_deadline_s: per-stage, per-site deadline in the in-process transport.
        graph_key: secret of the server used to derive each round's graph seed in the
            semi-honest mode (None: a fresh random key per instance, so no graph is known
            before its round).
        identities: each site's enrolled signing key (the simulation holds them all);
            setting them selects the malicious-server mode (signed keys and survivor
            lists, seed commitments, graph seed from the signed advertisements).
        session: 32-byte id of the run bound into every signature (None: fresh, random).
        threat_model: ``"malicious"`` (the default when ``identities`` are given) or
            ``"semi-honest"``. In the malicious model k and t come from
            :func:`~veil.protocols.secagg.choose_k` with ``model="malicious"``, and a
            user-set (k, t) below that bound is refused with
            :class:`~veil.errors.InsecureParametersError` unless the model is explicitly
            downgraded to ``"semi-honest"`` (then the identities are not used).
        input_bound: the largest |value| an honest site's row can hold (the quantiser's
            per-site maximum); when set, a sum whose centred magnitude exceeds
            survivors × bound in any coordinate is refused (no honest cohort produces it).
            A malicious site can still shift the sum within that bound: inputs are not
            proven in range (no zero-knowledge proofs).
        fixed_deadlines: side channels — the server acts only at stage deadlines, on the
            stage's messages in a CSPRNG-shuffled order; every stage lasts its full
            ``stage_deadline_s`` (which must then be set).
        pad_messages: side channels — every message is padded to one size per type and
            round (``SecAggConfig.pad_messages``).
        site_delay_s: side channels — each site waits a random CSPRNG delay in
            ``[0, site_delay_s)`` after its handler, within its stage deadline.
    """

    bits: int = 32
    k: int | None = None
    threshold: int | None = None
    dropout: float = 0.1
    corrupt: float = 0.05
    stage_deadline_s: float | None = None
    graph_key: bytes | None = field(default=None, repr=False)
    identities: Mapping[int, SiteIdentity] | None = field(
        default=None, repr=False, compare=False
    )
    session: bytes | None = field(default=None, repr=False)
    threat_model: str | None = None
    input_bound: int | None = None
    fixed_deadlines: bool = False
    pad_messages: bool = False
    site_delay_s: float = 0.0
    name: str = "secagg"
    #: protocol stages at which the simulation may drop a site (derived from the table)
    stages: ClassVar[tuple[str, ...]] = STAGES

    def __post_init__(self) -> None:
        model = self.threat_model
        if model is None:
            model = "malicious" if self.identities is not None else "semi-honest"
        if model not in MODELS:
            raise ConfigError(f"threat_model must be one of {MODELS}, got {model!r}")
        if model == "malicious" and self.identities is None:
            raise ConfigError(
                "the malicious-server model needs enrolled site identities (identities=...)"
            )
        object.__setattr__(self, "threat_model", model)
        if self.fixed_deadlines and self.stage_deadline_s is None:
            raise ConfigError("fixed_deadlines needs stage_deadline_s (every stage lasts it)")
        SideChannels(self.fixed_deadlines, self.site_delay_s)  # ConfigError: a bad delay
        if self.graph_key is None:
            object.__setattr__(self, "graph_key", secrets.token_bytes(32))
        if self.session is None:
            object.__setattr__(self, "session", secrets.token_bytes(32))
        roster = None
        if model == "malicious" and self.identities is not None:
            roster = Roster.of("secagg", self.identities.values())
        object.__setattr__(self, "_roster", roster)

    def _check_magnitude(self, total: np.ndarray, survivors: int) -> None:
        """Refuse a sum no honest cohort could produce (``input_bound`` per site).

        Raises:
            InvalidUpdateError: some coordinate's centred sum exceeds survivors × bound.
        """
        if self.input_bound is None:
            return
        limit = survivors * int(self.input_bound)
        worst = int(np.max(np.abs(ring.to_signed(total, self.bits)), initial=0))
        if worst > limit:
            raise InvalidUpdateError(
                f"the secure sum has a coordinate of magnitude {worst}, more than {survivors} "
                f"honest sites bounded by {self.input_bound} can produce ({limit}): some site "
                "sent an out-of-range input; the aggregate is refused"
            )

    @property
    def malicious(self) -> bool:
        """Whether rounds run the malicious-server mode."""
        return self.threat_model == "malicious"

    def config(self, site_ids: np.ndarray, dim: int, round: int) -> SecAggConfig:
        """The public parameters of one round for this cohort.

        Raises:
            ConfigError, InsecureParametersError: on impossible or unsafe parameters (in
                the malicious model: a user-set (k, t) below its bound).
        """
        ids = tuple(int(i) for i in site_ids)
        n = len(ids)
        model = str(self.threat_model)
        if self.k is None:
            gp = choose_k(n, self.dropout, self.corrupt, model=model)
            k, t = gp.k, gp.t
        else:
            k = min(int(self.k), n - 1)
            t = k // 2 + 1
            if self.malicious:
                t = (k + corrupt_bound(n, k, self.corrupt)) // 2 + 1
        if self.threshold is not None:
            t = int(self.threshold)
        if self.malicious:
            check_malicious(n, k, t, self.corrupt)
        key = self.graph_key or b""
        seed = derive_key(key, f"veil/secagg/graph/{round}")
        roster = getattr(self, "_roster", None)
        session = self.session or b""
        return SecAggConfig(
            round, ids, dim, self.bits, k, t, seed, roster, session, self.pad_messages
        )

    def aggregate(
        self,
        encoded: np.ndarray,
        site_ids: np.ndarray,
        round: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> SumResult:
        """Sum integer rows mod 2^bits with SecAgg+.

        Raises:
            LocalError: if the rows are not integers or do not match ``site_ids``.
            AbortError: too few survivors at some stage (no partial result).
        """
        encoded = np.asarray(encoded)
        if encoded.ndim != 2 or not np.issubdtype(encoded.dtype, np.integer):
            raise LocalError("SecAggSum sums integer rows; put a Quantize stage before it")
        if encoded.shape[0] != len(site_ids):
            raise LocalError("one encoded row per site id is required")
        cfg = self.config(np.asarray(site_ids), encoded.shape[1], round)
        row = {int(u): i for i, u in enumerate(site_ids)}
        out, trace = run_round(
            cfg, lambda u: encoded[row[u]], dropouts, self.stage_deadline_s,
            identities=self.identities if self.malicious else None,
            side_channels=SideChannels(self.fixed_deadlines, self.site_delay_s),
        )
        meas = {f"server_time_{s}_s": v for s, v in trace.server_time_s.items()}
        meas.update({"k": float(cfg.k), "threshold": float(cfg.threshold)})
        meas["malicious_server_model"] = float(self.malicious)
        meas["fixed_deadlines"] = float(self.fixed_deadlines)
        meas["pad_messages"] = float(self.pad_messages)
        meas["site_delay_s"] = float(self.site_delay_s)
        meas["blamed_sites"] = float(len(out.blamed))
        meas.update({f"count_{s}": float(c) for s, c in out.stage_counts.items()})
        meas["refused_messages"] = float(len(trace.errors))
        meas["critical_path_s"] = trace.critical_path_s()
        if self.fixed_deadlines:  # deployed, no stage ends before its deadline
            floor = len(STAGES) * float(self.stage_deadline_s or 0.0)
            meas["critical_path_s"] = max(meas["critical_path_s"], floor)
        meas["site_time_max_s"] = max(
            (sum(t.values()) for t in trace.site_time_s.values()), default=0.0
        )
        self._check_magnitude(out.total, len(out.survivors))
        return SumResult(
            total=out.total,
            survivors=np.asarray(out.survivors, dtype=np.int64),
            bytes_sent=trace.bytes_sent,
            bytes_received=trace.bytes_received,
            measurements=meas,
        )
