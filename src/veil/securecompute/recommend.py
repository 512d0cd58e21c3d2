"""Which private-inference technology fits this model, batch, network and threat model.

The recommender does not use rules of thumb: each backend's cost is *measured* on this
machine for the user's model and batch (:mod:`veil.securecompute.recommend_measure`, cached),
split into what the network does not change (compute) and what it does (rounds, bytes), and
predicted for the user's network:

    latency(rtt, bw) = compute_s + rounds · rtt + bytes / bw

* **mpc** — compute = input sharing + online + reveal with the three parties in-process;
  ``rounds`` and ``bytes`` are the engine's own counts for one request. Set-up (sharing the
  model once) is reported apart.
* **fhe** — compute = client encryption + server evaluation + client decryption; one round
  (inputs up, outputs down); bytes = ciphertexts. Set-up (key generation, sending
  evaluation keys) is reported apart.

Feasibility comes first: the threat model (``one-server`` has no three non-colluding
parties, so mpc is out; ``three-servers`` requires the model hidden from the servers, so
fhe — whose server holds the model — is out), support (fhe refuses forests and max-pooling,
saying why) and accuracy (classifiers must agree with the plaintext argmax on at least
``min_agreement`` of the measured inputs, regressions stay within ``max_rel_err``). Among
the feasible backends the lowest predicted latency wins; a latency budget is checked and
reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from veil.errors import ConfigError

__all__ = [
    "THREAT_MODELS",
    "Network",
    "BackendCost",
    "Recommendation",
    "choose",
    "LOOPBACK",
]

THREAT_MODELS = {
    "either": "both are acceptable: three non-colluding servers (mpc) or one server holding "
    "the model in the clear (fhe)",
    "one-server": "a single server that holds the model; no three non-colluding parties: fhe only",
    "three-servers": "the model must stay hidden from the servers (secret-shared over three "
    "non-colluding parties): mpc only",
}


@dataclass(frozen=True)
class Network:
    """The network between client and servers (and between the mpc parties).

    Attributes:
        rtt_s: round-trip time in seconds.
        bandwidth_bps: bytes per second.
    """

    rtt_s: float = 0.0006
    bandwidth_bps: float = 1e9

    def __post_init__(self) -> None:
        if self.rtt_s < 0 or self.bandwidth_bps <= 0:
            raise ConfigError("rtt must be >= 0 and bandwidth > 0", key="network")


LOOPBACK = Network(rtt_s=0.0006, bandwidth_bps=2e9)  # TLS loopback round trip ~0.6 ms here


@dataclass
class BackendCost:
    """Measured cost of one backend for one model and batch.

    Attributes:
        backend: ``"mpc"`` or ``"fhe"``.
        supported: False when the backend refused the model (``reason`` says why).
        compute_s: per-request seconds that do not depend on the network.
        rounds: network round trips per request.
        bytes: bytes moved per request.
        setup_s / setup_bytes: one-off costs (model sharing or key generation + keys).
        accuracy: ``{"agreement": ...}`` (classification) or ``{"max_rel_err": ...}``.
        batch: samples per request.
        phases: the measured phase times (backend-specific names).
        measured_on: how the measurement ran (processes and transport).
    """

    backend: str
    supported: bool
    reason: str = ""
    compute_s: float = 0.0
    rounds: int = 0
    bytes: int = 0
    setup_s: float = 0.0
    setup_bytes: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    batch: int = 1
    phases: dict[str, float] = field(default_factory=dict)
    measured_on: str = ""

    def latency(self, net: Network) -> float:
        """Predicted seconds per request on ``net``."""
        return self.compute_s + self.rounds * net.rtt_s + self.bytes / net.bandwidth_bps

    def setup(self, net: Network) -> float:
        """Predicted one-off seconds on ``net``."""
        return self.setup_s + self.setup_bytes / net.bandwidth_bps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackendCost:
        return cls(**d)


@dataclass
class Recommendation:
    """The choice, both backends' predicted costs, and the reasons."""

    choice: str | None
    reasons: list[str]
    rows: list[dict[str, Any]]

    def render(self) -> str:
        """A plain-text table plus the reasons (what ``veil recommend`` prints)."""
        head = f"{'backend':8s} {'ok':3s} {'latency':>10s} {'compute':>10s} {'rounds':>7s} " \
               f"{'bytes':>11s} {'setup':>9s} {'samples/s':>10s}  accuracy"
        lines = [head]
        for r in self.rows:
            if not r["supported"]:
                lines.append(f"{r['backend']:8s} no  unsupported: {r['reason']}")
                continue
            acc = ", ".join(f"{k}={v:.4g}" for k, v in r["accuracy"].items())
            lines.append(
                f"{r['backend']:8s} {'yes' if r['feasible'] else 'no':3s} "
                f"{r['latency_s'] * 1e3:8.1f}ms {r['compute_s'] * 1e3:8.1f}ms {r['rounds']:7d} "
                f"{r['bytes']:11,d} {r['setup_s']:8.2f}s {r['throughput']:10.1f}  {acc}"
            )
        lines += [f"  {r['backend']} measured as: {r['measured_on']}" for r in self.rows
                  if r.get("measured_on")]
        lines.append("")
        lines.append(f"choice: {self.choice or 'none'}")
        lines += [f"  - {x}" for x in self.reasons]
        return "\n".join(lines)


def _accurate(c: BackendCost, min_agreement: float, max_rel_err: float) -> bool:
    if "agreement" in c.accuracy:
        return c.accuracy["agreement"] >= min_agreement
    if "max_rel_err" in c.accuracy:
        return c.accuracy["max_rel_err"] <= max_rel_err
    return True


def choose(
    costs: list[BackendCost],
    *,
    network: Network = LOOPBACK,
    threat: str = "either",
    latency_budget_s: float | None = None,
    min_agreement: float = 0.99,
    max_rel_err: float = 1e-2,
) -> Recommendation:
    """Pick a backend from measured costs.

    Raises:
        ConfigError: unknown threat model.
    """
    if threat not in THREAT_MODELS:
        raise ConfigError(f"threat model must be one of {sorted(THREAT_MODELS)}", key="threat")
    allowed = {"either": {"mpc", "fhe"}, "one-server": {"fhe"}, "three-servers": {"mpc"}}[threat]
    rows, reasons = [], [f"threat model {threat!r}: {THREAT_MODELS[threat]}"]
    feasible: list[tuple[float, BackendCost]] = []
    for c in costs:
        row: dict[str, Any] = {"backend": c.backend, "supported": c.supported, "reason": c.reason,
                               "measured_on": c.measured_on}
        if not c.supported:
            reasons.append(f"{c.backend} cannot run this model: {c.reason}")
            row["feasible"] = False
            rows.append(row)
            continue
        lat = c.latency(network)
        acc_ok = _accurate(c, min_agreement, max_rel_err)
        ok = c.backend in allowed and acc_ok
        row.update(
            feasible=ok, latency_s=lat, compute_s=c.compute_s, rounds=c.rounds, bytes=c.bytes,
            setup_s=c.setup(network), throughput=c.batch / lat if lat > 0 else float("inf"),
            accuracy=c.accuracy, network_s=lat - c.compute_s,
        )
        rows.append(row)
        if c.backend not in allowed:
            reasons.append(f"{c.backend} excluded by the threat model")
        elif not acc_ok:
            reasons.append(f"{c.backend} misses the accuracy requirement ({c.accuracy})")
        else:
            feasible.append((lat, c))
    if not feasible:
        reasons.append("no backend is feasible under these constraints")
        return Recommendation(None, reasons, rows)
    feasible.sort(key=lambda t: t[0])
    lat, best = feasible[0]
    net_part = best.rounds * network.rtt_s + best.bytes / network.bandwidth_bps
    reasons.append(
        f"{best.backend}: {lat * 1e3:.1f} ms per request of {best.batch} on rtt "
        f"{network.rtt_s * 1e3:.2f} ms / {network.bandwidth_bps / 1e6:.0f} MB/s "
        f"({best.compute_s * 1e3:.1f} ms compute + {net_part * 1e3:.1f} ms network: "
        f"{best.rounds} rounds, {best.bytes:,} bytes)"
    )
    if len(feasible) > 1:
        lat2, other = feasible[1]
        reasons.append(f"{lat2 / lat:.1f}x faster than {other.backend} ({lat2 * 1e3:.1f} ms)")
        # where would the choice flip? (rounds dominate mpc, bytes dominate fhe)
        dr = best.rounds - other.rounds
        dc = (other.compute_s + other.bytes / network.bandwidth_bps) - (
            best.compute_s + best.bytes / network.bandwidth_bps
        )
        if dr > 0 and dc > 0:
            reasons.append(f"{other.backend} would win above an rtt of {dc / dr * 1e3:.2f} ms")
        elif dr < 0 and dc < 0:
            reasons.append(f"{other.backend} would win below an rtt of {dc / dr * 1e3:.2f} ms")
    if latency_budget_s is not None:
        if lat <= latency_budget_s:
            reasons.append(f"meets the latency budget of {latency_budget_s * 1e3:.1f} ms")
        else:
            reasons.append(f"MISSES the latency budget of {latency_budget_s * 1e3:.1f} ms "
                           "(fastest feasible backend shown)")
    return Recommendation(best.backend, reasons, rows)
