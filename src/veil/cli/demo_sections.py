"""Demo sections for capabilities layered on the runtime (DP, SecAgg, audit, report)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from veil.cli.demo import DemoContext

__all__ = ["section_dp_impl", "section_secagg_impl", "section_audit_report_impl"]


def section_dp_impl(ctx: DemoContext) -> None:  # pragma: no cover - filled as layers land
    ctx.console.print("[dim]differential privacy section: pending[/]")


def section_secagg_impl(ctx: DemoContext) -> None:  # pragma: no cover
    ctx.console.print("[dim]secure aggregation section: pending[/]")


def section_audit_report_impl(ctx: DemoContext) -> None:  # pragma: no cover
    ctx.console.print("[dim]audit section: pending[/]")
