"""Command handlers behind ``veil COMMAND`` (each a few lines over the Python API)."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from veil.errors import ConfigError

__all__ = ["cmd_demo", "cmd_train", "cmd_sweep", "cmd_bench", "cmd_audit", "cmd_report", "cmd_log"]


def cmd_demo(args: argparse.Namespace) -> int:
    """``veil demo``: the main job."""
    from veil.cli.demo import run_demo

    run_demo(Path(args.out), quick=args.quick)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``veil train CONFIG [--resume]``."""
    from veil.cli.progress import round_progress, summary_table
    from veil.federation import load_config, train

    overrides: dict[str, Any] = {}
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    if args.name:
        overrides["name"] = args.name
    if args.out:
        overrides["output_dir"] = args.out
    cfg = load_config(args.config, overrides)
    console = Console()
    start = 0
    if args.resume:
        rec = cfg.run_dir() / "record.json"
        if rec.exists():
            start = len(json.loads(rec.read_text()).get("rounds", []))
        console.print(f"resuming [bold]{cfg.name}[/] after round {start}")
    with round_progress(console, cfg.rounds, cfg.name, start, enabled=not args.quiet) as cb:
        out = train(cfg, resume=args.resume, on_round=cb)
    console.print(summary_table(f"{cfg.name}: {cfg.data.dataset}, {cfg.data.sites} sites", out.result.rounds))
    if out.result.stopped_reason:
        console.print(f"[yellow]stopped early:[/] {out.result.stopped_reason}")
    console.print(f"record: {out.run_dir / 'record.json'}   model: {out.run_dir / 'model.pt'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """``veil sweep CONFIG --epsilons ...``."""
    try:
        sweep_mod = importlib.import_module("veil.privacy.sweep")
    except ImportError:
        raise ConfigError("the privacy sweep is not available in this build") from None
    from veil.federation import load_config

    eps = []
    for tok in args.epsilons.split(","):
        tok = tok.strip()
        try:
            eps.append(float(tok))
        except ValueError:
            raise ConfigError(f"not a number: {tok!r}", key="--epsilons") from None
    cfg = load_config(args.config)
    out = Path(args.out) if args.out else cfg.run_dir().with_name(cfg.name + "-sweep")
    result = sweep_mod.sweep_config(cfg, eps, out)
    Console().print(result.get("table", result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``veil bench NAME [--json PATH] [--quick]``."""
    from veil.bench import BENCHMARKS

    console = Console()
    if args.name == "list":
        for name, target in BENCHMARKS.items():
            console.print(f"{name:12s} {target}")
        return 0
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    for n in names:
        if n not in BENCHMARKS:
            raise ConfigError(f"unknown benchmark {n!r}; choose one of {sorted(BENCHMARKS)} or 'all'")
    results: dict[str, Any] = {}
    for n in names:
        mod_name, fn_name = BENCHMARKS[n].split(":")
        fn = getattr(importlib.import_module(mod_name), fn_name)
        console.rule(f"bench {n}")
        results[n] = fn(quick=args.quick)
        console.print_json(json.dumps(results[n], default=str))
    if args.json_path:
        p = Path(args.json_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(results if len(names) > 1 else results[names[0]], indent=1, default=str))
        console.print(f"written: {p}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """``veil audit RUN``."""
    try:
        audit = importlib.import_module("veil.audit")
        fn = audit.audit_run
    except (ImportError, AttributeError):
        raise ConfigError("auditing is not available in this build") from None
    res = fn(Path(args.run))
    Console().print_json(json.dumps(res, default=str))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``veil report RUN``."""
    try:
        fn = importlib.import_module("veil.report").render_report
    except (ImportError, AttributeError):
        raise ConfigError("reports are not available in this build") from None
    path = fn(Path(args.run))
    Console().print(f"report: {path}")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    """``veil log verify|show PATH``."""
    try:
        AuditLog = importlib.import_module("veil.audit.log").AuditLog
    except (ImportError, AttributeError):
        raise ConfigError("the audit log is not available in this build") from None
    log = AuditLog(Path(args.path))
    console = Console()
    if args.action == "verify":
        res = log.verify()
        ok = bool(getattr(res, "ok", res))
        console.print(("[green]OK[/] " if ok else "[red]BROKEN[/] ") + str(res))
        return 0 if ok else 1
    t = Table("index", "kind", "time")
    for i, e in enumerate(log.entries()):
        t.add_row(str(i), str(e.get("kind")), str(e.get("time", "")))
    console.print(t)
    return 0
