"""Progress bars and summary tables for federated runs (rich)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["round_progress", "summary_table", "fmt_bytes"]


def fmt_bytes(n: float) -> str:
    """Human-readable byte count."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@contextmanager
def round_progress(
    console: Console, total: int, label: str, start: int = 0, enabled: bool = True
) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A per-round progress bar; yields the callback the runtime calls after each round."""
    if not enabled:
        yield lambda rec: None
        return
    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with prog:
        task = prog.add_task(label, total=total, completed=start, status="")

        def on_round(rec: dict[str, Any]) -> None:
            bits = []
            if rec.get("test_accuracy") is not None:
                bits.append(f"acc {rec['test_accuracy']:.3f}")
            for k in ("epsilon_client", "epsilon_sample_max"):
                if rec.get(k) is not None:
                    bits.append(f"ε {rec[k]:.2f}")
                    break
            if rec.get("aborted"):
                bits.append("[red]round aborted[/]")
            prog.update(task, advance=1, status="  ".join(bits))

        yield on_round


def summary_table(
    title: str, rounds: list[dict[str, Any]], max_rows: int = 12, private: bool = True
) -> Table:
    """A table of rounds: accuracy, loss, sites, bytes per site (long runs are thinned).

    ``private=False`` (``privacy.debug_unnoised_statistics``): the ε column is headed
    "NOT VALID" — the run released un-noised statistics.
    """
    t = Table(title=title, title_justify="left")
    t.add_column("round", justify="right")
    t.add_column("test acc", justify="right")
    t.add_column("test loss", justify="right")
    t.add_column("sites in sum", justify="right")
    t.add_column("bytes / site", justify="right")
    has_eps = any(
        r.get("epsilon_client") is not None or r.get("epsilon_sample_max") is not None
        for r in rounds
    )
    if has_eps:
        t.add_column("ε spent" if private else "ε (NOT VALID: not private)", justify="right")
    step = max(1, -(-len(rounds) // max_rows))
    shown = rounds[::step]
    if rounds and shown[-1] is not rounds[-1]:
        shown.append(rounds[-1])
    for r in shown:
        acc = r.get("test_accuracy")
        loss = r.get("test_loss")
        row = [
            str(r["round"] + 1),
            f"{acc:.3f}" if acc is not None else "–",
            f"{loss:.3f}" if loss is not None else "–",
            # a DP run's record keeps only counts (privacy.record_cohorts = false), and
            # none under hidden cohorts (they would count the secret cohort): "–"
            f"{r.get('n_summed', len(r.get('survivors', [])))}"
            f"/{r.get('n_selected', len(r.get('cohort', [])))}"
            if any(k in r for k in ("n_summed", "survivors")) else "–",
            fmt_bytes(r["bytes_per_site_mean"]) if "bytes_per_site_mean" in r else "–",
        ]
        if has_eps:
            e = r.get("epsilon_client", r.get("epsilon_sample_max"))
            row.append(f"{e:.2f}" if e is not None else "–")
        t.add_row(*row)
    return t
