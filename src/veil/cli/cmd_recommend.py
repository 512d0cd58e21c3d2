"""``veil recommend MODEL``: measure both private-inference backends and choose one.

Prints each backend's predicted latency on the given network (compute measured here plus
rounds x RTT plus bytes / bandwidth), rounds, bytes, set-up and accuracy, then the choice and
its reasons. Measurements are cached (``--cache``; ``--refresh`` re-measures).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``recommend`` sub-command (imports nothing heavy)."""
    p = sub.add_parser(
        "recommend",
        help="which private-inference backend (mpc or fhe) fits a model, network and threat model",
        description="Measure mpc and fhe on this machine for MODEL (cached) and choose by the "
        "predicted latency on the given network, subject to the threat model and accuracy.",
    )
    p.add_argument("model", help="a run directory, or one of: digits-logreg, digits-mlp, "
                   "digits-cnn, diabetes-linreg, diabetes-rf")
    p.add_argument("--data", help="inputs .npy (N, *input_shape) for a run directory")
    p.add_argument("--batch", type=int, default=1, help="samples per request (default 1)")
    p.add_argument("--rtt-ms", type=float, default=0.6, help="network round trip (default 0.6)")
    p.add_argument("--bandwidth-mbps", type=float, default=1000.0,
                   help="network bandwidth in megabytes/s (default 1000)")
    p.add_argument("--threat", default="either", choices=["either", "one-server", "three-servers"],
                   help="either | one-server (no 3 non-colluding parties) | three-servers "
                   "(model hidden from the servers)")
    p.add_argument("--budget-ms", type=float, help="latency budget per request")
    p.add_argument("--cache", help="measurement cache directory (default ~/.cache/veil/recommend)")
    p.add_argument("--refresh", action="store_true", help="measure again, ignoring the cache")
    p.add_argument("--json", dest="json_path", help="also write the recommendation as JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``veil recommend``; exit 0 when a backend is feasible, 3 when none is."""
    import json

    from veil.errors import ConfigError
    from veil.securecompute.recommend import Network
    from veil.securecompute.recommend_measure import recommend
    from veil.securecompute.recommend_models import resolve_model

    if args.batch < 1:
        raise ConfigError("--batch must be >= 1", key="batch")
    nm = resolve_model(args.model, args.data)
    x = nm.inputs[: args.batch]
    if len(x) < args.batch:
        raise ConfigError(f"only {len(nm.inputs)} inputs available for --batch {args.batch}")
    net = Network(rtt_s=args.rtt_ms / 1e3, bandwidth_bps=args.bandwidth_mbps * 1e6)
    rec = recommend(nm.model, x, nm.calibration, network=net, threat=args.threat,
                    latency_budget_s=None if args.budget_ms is None else args.budget_ms / 1e3,
                    cache_dir=args.cache, refresh=args.refresh)
    print(f"model {nm.model.name}: {nm.model!r}, batch {args.batch}")
    print(rec.render())
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            json.dump({"model": nm.model.name, "batch": args.batch, "choice": rec.choice,
                       "reasons": rec.reasons, "backends": rec.rows}, f, indent=1, default=str)
    return 0 if rec.choice else 3
