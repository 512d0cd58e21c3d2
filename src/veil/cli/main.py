"""The ``veil`` command: a thin layer over the Python API.

Commands: ``demo``, ``train``, ``tune``, ``sweep``, ``bench``, ``audit``, ``report``, ``log``.
Errors veil raises on purpose print as one clear line and exit with status 2; anything
else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from veil.errors import VeilError

__all__ = ["main", "build_parser", "EXTRA_COMMANDS"]

# Commands that live in their own module ``veil.cli.cmd_<name>``: each module has
# ``register(subparsers)`` (adds its parser; must import nothing heavy) and ``run(args) -> int``.
# A new command is one module plus one line here.
EXTRA_COMMANDS: dict[str, str] = {
    "synth": "veil.cli.cmd_synth",
    "identity": "veil.cli.cmd_identity",
    "recommend": "veil.cli.cmd_recommend",
    "deploy": "veil.cli.cmd_deploy",
    "infer": "veil.cli.cmd_infer",
    "mpc": "veil.cli.cmd_mpc",
    "tune": "veil.cli.cmd_tune",
}


def _train_epilog() -> str:
    from veil.federation.config import describe_keys

    lines = ["config keys (TOML; dotted = [section] key):"]
    for key, default, desc in describe_keys():
        lines.append(f"  {key:34s} {desc}  [default: {default}]")
    lines.append("")
    lines.append("examples: veil train examples/digits_noniid.toml ; veil train --resume CONFIG")
    return "\n".join(lines)


_TRAIN_EPILOG = "\0veil-train-epilog"


class _TrainHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Builds the config-key epilog only when ``veil train --help`` is shown: it imports the
    config module (and through it torch), which ``veil --help`` must not wait for."""

    def add_text(self, text: str | None) -> None:
        super().add_text(_train_epilog() if text == _TRAIN_EPILOG else text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    p = argparse.ArgumentParser(
        prog="veil",
        description="Machine learning across sites that must not expose their data.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="the main job: federated training, privacy, audit, report")
    d.add_argument("--out", default="runs", help="output directory (default: runs)")
    d.add_argument("--quick", action="store_true", help="fewer rounds (for smoke tests)")

    t = sub.add_parser(
        "train",
        help="run a federated training job from a TOML config",
        epilog=_TRAIN_EPILOG,
        formatter_class=_TrainHelpFormatter,
    )
    t.add_argument("config", help="TOML run config")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run")
    t.add_argument(
        "--restart", action="store_true",
        help="start the run afresh (e.g. after a corrupt checkpoint); the earlier files are "
        "kept in RUN/previous-N/",
    )
    t.add_argument("--rounds", type=int, help="override the number of rounds")
    t.add_argument("--name", help="override the run name")
    t.add_argument("--out", help="override output_dir")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument(
        "--enforce-policy", action="store_true",
        help="check [policy] after the run (auditing first when it sets max_mia_tpr); exit 3 "
        "and mark the model not releasable (policy.json) when a target is missed",
    )

    s = sub.add_parser("sweep", help="privacy-utility sweep: train once per epsilon")
    s.add_argument("config", help="TOML run config with a [privacy] section")
    s.add_argument("--epsilons", default="0.5,1,2,3,8,inf", help="comma-separated ε values")
    s.add_argument("--out", help="output directory for the table and PNG")

    b = sub.add_parser("bench", help="benchmarks (performance targets live here)")
    b.add_argument("name", help="benchmark name, or 'all' / 'list'")
    b.add_argument("--json", dest="json_path", help="write results as JSON to this path")
    b.add_argument("--quick", action="store_true", help="small sizes (< 1 minute)")
    b.add_argument("--backend", help="inference: mpc, fhe or all (benchmarks that take one)")

    a = sub.add_parser("audit", help="attack a finished run (membership inference, canaries)")
    a.add_argument("run", help="run directory (holds record.json)")

    r = sub.add_parser("report", help="render a run's self-contained HTML report")
    r.add_argument("run", help="run directory (holds record.json)")

    lg = sub.add_parser("log", help="the hash-chained audit log")
    lg.add_argument("action", choices=["verify", "show"])
    lg.add_argument("path", nargs="?", default="runs/audit.log", help="log file")

    for module_name in EXTRA_COMMANDS.values():
        import importlib

        importlib.import_module(module_name).register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``veil`` console command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from veil import __version__

        print(f"veil {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    import os

    import torch

    # Small models run fastest on one thread, and extra threads thrash a shared machine.
    torch.set_num_threads(int(os.environ.get("VEIL_THREADS", "1")))
    if args.command in EXTRA_COMMANDS:
        import importlib

        handler = importlib.import_module(EXTRA_COMMANDS[args.command]).run
    else:
        from veil.cli import commands

        handler = getattr(commands, "cmd_" + args.command)
    try:
        return int(handler(args) or 0)
    except VeilError as e:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {type(e).__name__}: {e}", highlight=False)
        return 2
    except KeyboardInterrupt:
        hint = (
            "a search cannot be resumed: its trials have spent privacy; `veil tune --restart "
            "CONFIG` searches again, spending the budget again"
            if args.command == "tune"
            else "a run can be continued with `veil train --resume CONFIG`"
        )
        print(f"\ninterrupted; {hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
