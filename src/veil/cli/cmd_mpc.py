"""``veil mpc certs`` and ``veil mpc party``: run the three compute parties yourself.

1. ``veil mpc certs --out DIR`` makes a CA and certificates for p0, p1, p2 and client
   (copy each machine its own ``.key`` and every ``.crt``).
2. On each compute machine: ``veil mpc party --id p0 --addresses addrs.json --certs DIR``
   where ``addrs.json`` maps ``p0, p1, p2, client`` to ``[host, port]``.
3. The data owner: ``veil infer --backend mpc MODEL INPUT --addresses addrs.json --certs DIR``.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``mpc`` sub-command (imports nothing heavy)."""
    p = sub.add_parser("mpc", help="certificates and compute-party processes for private "
                       "inference over mutual TLS")
    ms = p.add_subparsers(dest="mpc_command", metavar="ACTION", required=True)
    c = ms.add_parser("certs", help="create a CA and certificates for p0, p1, p2, client")
    c.add_argument("--out", default="mpc-certs", help="directory (default: mpc-certs)")
    q = ms.add_parser("party", help="run one compute party until the client stops it")
    q.add_argument("--id", required=True, choices=["p0", "p1", "p2"], help="party name")
    q.add_argument("--addresses", required=True,
                   help="JSON file (or JSON text): name -> [host, port] for p0, p1, p2, client")
    q.add_argument("--certs", required=True, help="certificate directory")
    q.add_argument("--deadline", type=float, default=30.0,
                   help="abort if a peer is silent this long (s)")


def run(args: argparse.Namespace) -> int:
    """Run ``veil mpc ACTION``."""
    import json
    from pathlib import Path

    from veil.errors import ConfigError

    if args.mpc_command == "certs":
        from veil.securecompute.mpc.processes import make_certs

        d = make_certs(args.out)
        print(f"certificates for p0, p1, p2, client and the CA written to {d}")
        return 0
    from veil.securecompute.mpc import MpcConfig
    from veil.securecompute.mpc.processes import run_party

    text = args.addresses
    if Path(text).exists():
        text = Path(text).read_text()
    try:
        addrs = {k: (v[0], int(v[1])) for k, v in json.loads(text).items()}
    except (ValueError, TypeError, IndexError, AttributeError):
        raise ConfigError("--addresses must map names to [host, port]", key="addresses") from None
    served = run_party(args.id, addrs, args.certs, MpcConfig(deadline_s=args.deadline))
    print(f"{args.id}: served {served} inference(s)")
    return 0
