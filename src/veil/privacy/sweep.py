"""Privacy–utility sweep: train once per ε, write a table and an accuracy-vs-ε curve.

``veil sweep CONFIG --epsilons 0.5,1,2,3,8,inf`` calls :func:`sweep` with a function that
trains the configured run at a given ε (``inf`` = privacy off) and returns its test
accuracy; the table (CSV and Markdown) and ``sweep.png`` land in ``out_dir``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from veil.errors import ConfigError

__all__ = ["sweep", "write_sweep", "parse_epsilons"]


def parse_epsilons(text: str) -> list[float]:
    """Parse ``"0.5,1,2,inf"`` into floats (``inf`` allowed, each > 0).

    Raises:
        ConfigError: an entry is not a positive number or ``inf``.
    """
    out = []
    for part in text.split(","):
        p = part.strip()
        try:
            v = float(p)
        except ValueError:
            raise ConfigError(
                f"not a number: {p!r}; write e.g. 0.5,1,2,3,8,inf", key="--epsilons"
            ) from None
        if not v > 0:
            raise ConfigError(f"every ε must be > 0 (or inf), got {p}", key="--epsilons")
        out.append(v)
    if not out:
        raise ConfigError("give at least one ε", key="--epsilons")
    return out


def sweep(
    run_fn: Callable[[float], float | dict[str, Any]],
    epsilons: Iterable[float],
    out_dir: str | Path,
    title: str = "Privacy–utility trade-off",
) -> list[dict[str, Any]]:
    """Train once per ε and write ``sweep.csv``, ``sweep.md``, ``sweep.json``, ``sweep.png``.

    Args:
        run_fn: trains at a given ε (``math.inf`` = non-private) and returns the test
            accuracy, or a dict with at least ``"accuracy"`` (other keys, such as the
            ε actually spent or the noise multiplier, are kept in the table).
        epsilons: the ε values, e.g. ``[0.5, 1, 2, 3, 8, inf]``.
        out_dir: output folder (created).
        title: plot title.

    Returns:
        One row per ε: ``{"epsilon", "accuracy", "seconds", ...}``.

    Raises:
        ConfigError: an ε is not > 0, or ``run_fn`` returned no accuracy.
    """
    rows: list[dict[str, Any]] = []
    for eps in epsilons:
        if not float(eps) > 0:
            raise ConfigError(f"every ε must be > 0 (or inf), got {eps}", key="--epsilons")
        t = time.perf_counter()
        res = run_fn(float(eps))
        row = dict(res) if isinstance(res, dict) else {"accuracy": res}
        if "accuracy" not in row:
            raise ConfigError("run_fn must return an accuracy (or a dict with 'accuracy')")
        row = {"epsilon": float(eps), "accuracy": float(row.pop("accuracy")), **row}
        row["seconds"] = round(time.perf_counter() - t, 2)
        rows.append(row)
    write_sweep(rows, out_dir, title)
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return str(v)


def write_sweep(
    rows: Sequence[dict[str, Any]], out_dir: str | Path, title: str = "Privacy–utility trade-off"
) -> Path:
    """Write the sweep table (CSV, Markdown, JSON) and the accuracy-vs-ε PNG.

    Non-private rows (ε = inf) are drawn as a dashed horizontal line.

    Returns:
        The output folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k, "")) for k in keys})
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    (out / "sweep.json").write_text(
        json.dumps(
            [
                {k: (str(v) if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()}
                for r in rows
            ],
            indent=2,
        )
    )
    _plot(rows, out / "sweep.png", title)
    return out


def _plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = sorted((r["epsilon"], r["accuracy"]) for r in rows if math.isfinite(r["epsilon"]))
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    if finite:
        ax.plot([e for e, _ in finite], [a for _, a in finite], "o-", label="DP")
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter, NullLocator

        # ticks at the swept ε values, written as plain numbers (not 10^0 powers)
        ax.set_xticks([e for e, _ in finite], [f"{e:g}" for e, _ in finite])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    for r in rows:
        if math.isinf(r["epsilon"]):
            ax.axhline(r["accuracy"], ls="--", color="grey", label="non-private (ε = ∞)")
            break
    ax.set_xlabel("target ε (log scale; δ the same for every run)")
    ax.set_ylabel("final test accuracy (R² for regression)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
