"""``veil tune CONFIG``: an accounted hyper-parameter search (:func:`veil.app.tune.tune_run`).

Exit status: 0 when the selected run is written (and, with ``--enforce-policy``, every
``[policy]`` target is met); 3 when a policy target is missed; 2 on a configuration error
or a search that cannot fit the budget; 1 when the released run failed (no model).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``tune`` sub-command (imports nothing heavy)."""
    p = sub.add_parser(
        "tune",
        help="accounted hyper-parameter search: K random trials, the best released, the "
        "whole search inside the budget",
        description="Run the [tuning] search of a run config: a random number of trials "
        "(drawn from a CSPRNG), each a full run with a candidate drawn at random, scored by "
        "a noisy accuracy; only the best run is kept and the whole search is accounted "
        "(Papernot & Steinke 2022, RDP). docs/differential-privacy.md",
    )
    p.add_argument("config", help="TOML run config with [privacy] and [tuning]")
    p.add_argument("--name", help="override the run name")
    p.add_argument("--out", help="override output_dir")
    p.add_argument("--restart", action="store_true",
                   help="set an earlier search's files aside (previous-N/) and search again, "
                   "spending the budget again")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--enforce-policy", action="store_true",
                   help="check [policy] against the released run; exit 3 when a target is "
                   "missed")


def run(args: argparse.Namespace) -> int:
    """Handle ``veil tune``."""
    from rich.console import Console
    from rich.table import Table

    from veil.app import load_config
    from veil.app.tune import tune_run
    from veil.cli.commands import _check_policy_config, _enforce_policy

    overrides: dict[str, Any] = {}
    if args.name:
        overrides["name"] = args.name
    if args.out:
        overrides["output_dir"] = args.out
    cfg = load_config(args.config, overrides)
    policy = _check_policy_config(cfg, args.enforce_policy)
    console = Console()
    # progress goes to stderr: its lines tell K, which must stay off published output
    err = Console(stderr=True)
    say = None if args.quiet else (lambda msg: err.print(f"tune {cfg.name}: {msg}",
                                                        highlight=False))
    out = tune_run(cfg, restart=args.restart, progress=say)
    t = Table(title=f"{cfg.name}: accounted search", title_justify="left")
    t.add_column("")
    t.add_column("")
    t.add_row("selected", ", ".join(f"{k} = {v}" for k, v in out.selected.items()))
    for level, eps in out.epsilon.items():
        t.add_row(f"ε, whole search ({level} level)",
                  f"{eps:.4f} at δ = {cfg.privacy.delta:g} (RDP)")
    t.add_row("each trial's ε target", f"{out.trial_target_epsilon:.4f}")
    acc = out.final_accuracy
    t.add_row("test accuracy", "–" if acc is None else f"{acc:.4f}")
    console.print(t)
    failed = (out.record.get("final") or {}).get("failed")
    if failed:
        Console(stderr=True).print(f"[bold red]run failed:[/] {failed}", highlight=False)
        return 1
    console.print(f"record: {out.run_dir / 'record.json'}   model: {out.run_dir / 'model.pt'}")
    if policy is not None and args.enforce_policy:
        return int(_enforce_policy(policy, out.run_dir, console))
    return 0
