"""``veil demo``: the main job, one section per capability.

Each section is a function ``(ctx) -> None`` that prints its part and adds to ``ctx``;
a capability joins the demo by adding one section to :data:`SECTIONS`. A section whose
capability is missing from this build says so and the demo goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from veil.app import RunConfig, parse_config, train
from veil.cli.progress import fmt_bytes, round_progress, summary_table

__all__ = ["run_demo", "SECTIONS", "DemoContext"]


@dataclass
class DemoContext:
    """Shared state between demo sections."""

    out: Path
    quick: bool
    console: Console
    results: dict[str, Any] = field(default_factory=dict)
    run_dirs: dict[str, Path] = field(default_factory=dict)


def _base_config(ctx: DemoContext, name: str, **sections: Any) -> RunConfig:
    raw: dict[str, Any] = {
        "name": name,
        "seed": 0,
        "rounds": 6 if ctx.quick else 30,
        "output_dir": str(ctx.out),
        "data": {"dataset": "digits", "sites": 5, "partition": "iid"},
        "model": {"name": "mlp", "hidden": [128, 128]},
        "local": {"epochs": 1, "batch_size": 16, "lr": 0.1},
    }
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v) if isinstance(v, dict) else raw.__setitem__(k, v)
    return parse_config(raw)


def _fresh(cfg: RunConfig) -> None:
    import shutil

    d = cfg.run_dir()
    if d.exists():
        shutil.rmtree(d)


def section_federated(ctx: DemoContext) -> None:
    """Five hospitals-to-be train a digits classifier together (FedAvg, no privacy yet)."""
    c = ctx.console
    c.rule("[bold]1. Federated training[/] — 5 sites, digits, FedAvg")
    cfg = _base_config(ctx, "demo-fedavg")
    _fresh(cfg)
    with round_progress(c, cfg.rounds, "fedavg") as cb:
        out = train(cfg, on_round=cb)
    c.print(summary_table("FedAvg on digits, 5 sites (IID)", out.result.rounds, max_rows=8))
    ctx.results["fedavg_accuracy"] = out.final_accuracy
    ctx.run_dirs["fedavg"] = out.run_dir
    c.print(f"record: {out.run_dir / 'record.json'}")


def section_dp(ctx: DemoContext) -> None:
    """The same federation with client-level differential privacy."""
    try:
        from veil.privacy import build_privacy  # noqa: F401
    except ImportError:
        ctx.console.print("[dim]differential privacy: not in this build[/]")
        return
    from veil.cli.demo_sections import section_dp_impl

    section_dp_impl(ctx)


def section_secagg(ctx: DemoContext) -> None:
    """A round with secure aggregation and dropouts."""
    try:
        from veil.aggregation.secagg import SecAggSum  # noqa: F401
    except ImportError:
        ctx.console.print("[dim]secure aggregation: not in this build[/]")
        return
    from veil.cli.demo_sections import section_secagg_impl

    section_secagg_impl(ctx)


def section_audit_report(ctx: DemoContext) -> None:
    """Attack the runs and render the report."""
    try:
        from veil.audit import audit_run  # noqa: F401
        from veil.report import render_report  # noqa: F401
    except ImportError:
        ctx.console.print("[dim]audit and report: not in this build[/]")
        return
    from veil.cli.demo_sections import section_audit_report_impl

    section_audit_report_impl(ctx)


def section_private_inference(ctx: DemoContext) -> None:
    """The demo's digits model classified without anyone seeing a digit: mpc, then fhe."""
    from veil.cli.demo_inference import (
        section_private_inference_fhe,
        section_private_inference_mpc,
    )

    section_private_inference_mpc(ctx)
    section_private_inference_fhe(ctx)


SECTIONS: list[Callable[[DemoContext], None]] = [
    section_federated,
    section_dp,
    section_secagg,
    section_audit_report,
    section_private_inference,
]


def run_demo(out: Path = Path("runs"), quick: bool = False) -> dict[str, Any]:
    """Run every demo section; returns the headline numbers."""
    console = Console()
    console.print(
        Panel.fit(
            "[bold]veil demo[/]: sites learn together without exposing their data.\n"
            "Simulated in one process; data: scikit-learn digits (8x8 images, 10 classes).",
            border_style="cyan",
        )
    )
    ctx = DemoContext(out=out, quick=quick, console=console)
    t0 = time.perf_counter()
    for section in SECTIONS:
        section(ctx)
    t = Table(title="demo summary", title_justify="left")
    t.add_column("what")
    t.add_column("result", justify="right")
    for k, v in ctx.results.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, int) and "bytes" in k:
            v = fmt_bytes(v)
        t.add_row(k, str(v))
    t.add_row("wall time", f"{time.perf_counter() - t0:.1f} s")
    console.print(t)
    return ctx.results
