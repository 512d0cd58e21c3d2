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
    from veil.app import load_config, train
    from veil.cli.progress import round_progress, summary_table

    overrides: dict[str, Any] = {}
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    if args.name:
        overrides["name"] = args.name
    if args.out:
        overrides["output_dir"] = args.out
    cfg = load_config(args.config, overrides)
    policy = _check_policy_config(cfg, getattr(args, "enforce_policy", False))
    console = Console()
    start = 0
    if args.resume:
        from veil.federation.record import RECORD, RunRecord

        if (cfg.run_dir() / RECORD).exists():
            start = len(RunRecord(cfg.run_dir()).rounds)
        console.print(f"resuming [bold]{cfg.name}[/] after round {start}")
    with round_progress(console, cfg.rounds, cfg.name, start, enabled=not args.quiet) as cb:
        out = train(cfg, resume=args.resume, on_round=cb,
                    restart=getattr(args, "restart", False))
    data = "own files" if cfg.data.files else cfg.data.dataset
    private = (out.record.get("privacy") or {}).get("private", True)
    console.print(summary_table(f"{cfg.name}: {data}, {cfg.data.sites} sites", out.result.rounds,
                                private=private))
    if not private:
        console.print("[bold red]NOT PRIVATE:[/] privacy.debug_unnoised_statistics = true; "
                      "the ε shown is not a valid claim")
    site_metrics = out.record.get("final", {}).get("site_metrics")
    if site_metrics:  # each site's own test data (data.files)
        from veil.models.metrics import Metrics, metrics_table

        header, rows = metrics_table({k: Metrics.from_dict(v) for k, v in site_metrics.items()})
        t = Table(*header, title="each site's own test data", title_justify="left")
        for row in rows:
            t.add_row(*row)
        console.print(t)
    if out.result.stopped_reason:
        console.print(f"[yellow]stopped early:[/] {out.result.stopped_reason}")
    if out.always_rejected:
        console.print(f"[yellow]warning:[/] site(s) {out.always_rejected} sent an invalid "
                      "(NaN/inf) update in every round they were selected for; their data "
                      "is not in the model (check their data and learning rate)")
    if out.failed:
        Console(stderr=True).print(f"[bold red]run failed:[/] {out.failed}; "
                                   f"record: {out.run_dir / 'record.json'}", highlight=False)
        return 1
    console.print(f"record: {out.run_dir / 'record.json'}   model: {out.run_dir / 'model.pt'}")
    if policy is not None and getattr(args, "enforce_policy", False):
        return _enforce_policy(policy, out.run_dir, console)
    return 0


def _check_policy_config(cfg: Any, enforce: bool) -> Any:
    """The run's ``[policy]`` as a Policy, validated before training starts (or None).

    Raises:
        ConfigError: a bad ``[policy]`` table, or ``--enforce-policy`` without one.
    """
    if not cfg.policy:
        if enforce:
            raise ConfigError("--enforce-policy needs a [policy] section in the config",
                              key="policy")
        return None
    from veil.audit.policy import Policy

    return Policy.from_dict(cfg.policy)


def _enforce_policy(policy: Any, run_dir: Path, console: Console) -> int:
    """``--enforce-policy``: check ``[policy]``; 3 (not releasable) when a target is missed."""
    from veil.audit.policy import enforce_policy

    res = enforce_policy(run_dir, policy)
    for t in res.targets:
        console.print(f"policy {t.name}: {'met' if t.met else '[bold red]MISSED[/]'} ({t.detail})")
    if not res.passed:
        console.print("[bold red]policy missed: the model is not releasable[/] (policy.json)")
        return 3
    console.print("policy met: releasable (policy.json)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """``veil sweep CONFIG --epsilons 0.5,1,2,3,8,inf``."""
    import math

    from veil.app import load_config, privacy_sweep
    from veil.privacy.sweep import parse_epsilons

    eps = parse_epsilons(args.epsilons)
    cfg = load_config(args.config)
    console = Console()

    def on_run(e: float, res: Any) -> None:
        label = "no DP" if math.isinf(e) else f"ε = {e:g}"
        console.print(f"{label:10s} accuracy {res.final_accuracy:.3f}  ({res.run_dir})")

    from veil.app.sweep import sweep_location

    out, _ = sweep_location(cfg, eps, args.out)  # never an earlier sweep's folder
    rows = privacy_sweep(cfg, eps, out, on_run=on_run)
    t = Table(title="privacy–utility sweep", title_justify="left")
    for col in ("target ε", "ε spent", "accuracy", "rounds"):
        t.add_column(col, justify="right")
    for r in rows:
        spent = r.get("epsilon_spent")
        t.add_row(
            f"{r['epsilon']:g}",
            f"{spent:.3f}" if isinstance(spent, (int, float)) else "–",
            f"{r['accuracy']:.3f}",
            str(r.get("rounds", "")),
        )
    console.print(t)
    console.print(f"table and curve: {out}/sweep.md, {out}/sweep.png")
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
            raise ConfigError(
                f"unknown benchmark {n!r}; choose one of {sorted(BENCHMARKS)} or 'all'"
            )
    results: dict[str, Any] = {}
    for n in names:
        mod_name, fn_name = BENCHMARKS[n].split(":")
        fn = getattr(importlib.import_module(mod_name), fn_name)
        console.rule(f"bench {n}")
        extra = {"backend": args.backend} if getattr(args, "backend", None) else {}
        results[n] = fn(quick=args.quick, **extra)
        console.print_json(json.dumps(results[n], default=str))
    if args.json_path:
        from veil._fs import write_json_atomic

        p = Path(args.json_path)  # strict JSON: a NaN measurement is written as null
        write_json_atomic(p, results if len(names) > 1 else results[names[0]], default=str)
        console.print(f"written: {p}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """``veil audit RUN``."""
    try:
        audit = importlib.import_module("veil.audit")
        fn = audit.audit_run
    except (ImportError, AttributeError):
        raise ConfigError("auditing is not available in this build") from None
    from veil.audit.run import AUDIT, summary_rows

    res = fn(Path(args.run))
    console = Console()
    t = Table("quantity", "value", title=f"audit of {res.get('run') or args.run}",
              title_justify="left")
    for k, v in summary_rows(res):
        t.add_row(k, v)
    console.print(t)
    console.print(f"full results: {Path(args.run) / AUDIT}", highlight=False)
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
        res = log.verify()  # a missing log fails: verifying nothing proves nothing
        if res.ok:
            console.print(f"[green]OK[/] {log.path}: {res.n_entries} entries, head {res.head}",
                          highlight=False, soft_wrap=True)
            return 0
        at = f" at entry {res.bad_index}" if res.bad_index is not None else ""
        Console(stderr=True).print(f"[red]BROKEN[/] {log.path}{at}: {res.reason}",
                                   highlight=False, soft_wrap=True)
        return 1
    if not log.path.is_file():
        from veil.errors import DataError

        raise DataError(f"no audit log at {log.path}")
    t = Table("index", "kind", "time")
    for i, e in enumerate(log.entries()):
        t.add_row(str(i), str(e.get("kind")), str(e.get("time", "")))
    console.print(t)
    return 0
