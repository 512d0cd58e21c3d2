"""``veil identity``: create a site identity, build and verify the federation's roster.

* ``veil identity new --site 3 --out keys/`` writes ``site-3.key`` (keep it on the site)
  and ``site-3.pub`` (send it to the federation).
* ``veil identity roster --federation NAME --out roster.json keys/*.pub`` builds the
  roster and prints its digest (every party pins it).
* ``veil identity verify roster.json [--digest HEX]`` checks a roster file (and that it is
  the pinned one) and prints its sites and digest.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``identity`` parser (imports nothing heavy)."""
    p = sub.add_parser("identity", help="site identities (Ed25519) and the federation roster")
    act = p.add_subparsers(dest="identity_action", metavar="ACTION", required=True)
    n = act.add_parser("new", help="create a site's signing key")
    n.add_argument("--site", type=int, required=True, help="the site's id in the federation")
    n.add_argument("--out", default=".", help="directory for site-<id>.key / .pub")
    r = act.add_parser("roster", help="build a roster from site-<id>.pub files")
    r.add_argument("pub", nargs="+", help="public key files")
    r.add_argument("--federation", required=True, help="federation name (bound into the digest)")
    r.add_argument("--out", required=True, help="roster file to write")
    v = act.add_parser("verify", help="check a roster file (and its pinned digest)")
    v.add_argument("roster", help="roster file")
    v.add_argument("--digest", help="the pinned digest (hex); refuse any other roster")


def run(args: argparse.Namespace) -> int:
    """Run one ``veil identity`` action; returns the exit status."""
    from pathlib import Path

    from veil.crypto.identity import Roster, SiteIdentity
    from veil.errors import ConfigError

    if args.identity_action == "new":
        key, pub = SiteIdentity.generate(args.site).save(args.out)
        print(f"wrote {key} (secret: keep it on the site) and {pub} (send it to the federation)")
        return 0
    if args.identity_action == "roster":
        roster = Roster.from_public_files(args.federation, args.pub)
        out = Path(args.out)
        if out.exists():
            raise ConfigError(f"{out} exists; write the roster to a new file")
        out.write_text(roster.to_json())
        print(f"wrote {out}: {len(roster.keys)} sites, digest {roster.digest().hex()}")
        return 0
    try:
        text = Path(args.roster).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read roster {args.roster}: {exc}") from exc
    roster = Roster.from_json(text, pinned_digest=args.digest)
    sites = ", ".join(str(s) for s in roster.keys)
    print(f"roster {roster.federation!r} OK: {len(roster.keys)} sites ({sites}); "
          f"digest {roster.digest().hex()}")
    return 0
