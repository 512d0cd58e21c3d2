"""Matplotlib figures for the run report, returned as base64 PNG strings (Agg backend).

Every function takes plain data (from ``record.json`` / ``audit.json``) and returns a
``data:image/png;base64,...`` URI or ``None`` when there is nothing to plot.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

__all__ = [
    "accuracy_figure",
    "bytes_figure",
    "epsilon_figure",
    "inversion_figure",
    "roc_figure",
    "visible_roc",
]

_BLUE, _ORANGE, _GREEN, _RED, _GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _encode(fig: Any) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _round_axis(ax: Any) -> None:
    """x axis of a per-round figure: integer rounds, numbered from 1 as the CLI does."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("round (from 1)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _series(rounds: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for i, r in enumerate(rounds):
        v = r.get(key)
        if isinstance(v, (int, float)):
            xs.append(int(r.get("round", i)) + 1)  # 1-based, as the CLI prints rounds
            ys.append(float(v))
    return xs, ys


def accuracy_figure(rounds: Sequence[dict[str, Any]]) -> str | None:
    """Test accuracy (left axis) and test loss (right axis) per round."""
    xa, ya = _series(rounds, "test_accuracy")
    xl, yl = _series(rounds, "test_loss")
    if not xa and not xl:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    if xa:
        ax.plot(xa, ya, "o-", color=_BLUE, ms=3, label="test accuracy")
        ax.set_ylabel("test accuracy", color=_BLUE)
    if xl:
        ax2 = ax.twinx()
        ax2.plot(xl, yl, "s--", color=_ORANGE, ms=2, label="test loss")
        ax2.set_ylabel("test loss", color=_ORANGE)
    _round_axis(ax)
    ax.grid(alpha=0.3)
    ax.set_title("Utility per round")
    return _encode(fig)


def epsilon_figure(rounds: Sequence[dict[str, Any]], target: float | None) -> str | None:
    """ε spent per round (client-level and sample-level), with the budget as a line."""
    series = {k: _series(rounds, k) for k in ("epsilon_client", "epsilon_sample_max")}
    if not any(s[0] for s in series.values()):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    labels = {"epsilon_client": "ε (client level)", "epsilon_sample_max": "ε (sample level, max)"}
    for (k, (x, y)), c in zip(series.items(), (_BLUE, _GREEN)):
        if x:
            ax.plot(x, y, "o-", ms=3, color=c, label=labels[k])
    if target is not None:
        ax.axhline(target, color=_RED, ls="--", lw=1, label=f"budget ε = {target:g}")
    _round_axis(ax)
    ax.set_ylabel("cumulative ε")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Privacy spent")
    return _encode(fig)


def bytes_figure(rounds: Sequence[dict[str, Any]]) -> str | None:
    """Bytes each site sent per round: the mean, and the min–max band over sites."""
    xs, mean, lo, hi = [], [], [], []
    for i, r in enumerate(rounds):
        sent = r.get("bytes_sent") or {}
        vals = [float(v) for v in sent.values() if isinstance(v, (int, float))]
        m = r.get("bytes_per_site_mean")
        if not vals and not isinstance(m, (int, float)):
            continue
        xs.append(int(r.get("round", i)) + 1)  # 1-based, as the CLI prints rounds
        mean.append(float(m) if isinstance(m, (int, float)) else sum(vals) / len(vals))
        lo.append(min(vals) if vals else mean[-1])
        hi.append(max(vals) if vals else mean[-1])
    if not xs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    k = 1024.0
    ax.fill_between(xs, [v / k for v in lo], [v / k for v in hi], color=_BLUE, alpha=0.2,
                    label="min–max over sites")
    ax.plot(xs, [v / k for v in mean], "o-", ms=3, color=_BLUE, label="mean per site")
    _round_axis(ax)
    ax.set_ylabel("KiB sent per site")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Communication cost")
    return _encode(fig)


def visible_roc(curve: dict[str, list[float]], floor: float) -> list[tuple[float, float]]:
    """The ROC points a figure draws: none below the lowest resolvable FPR ``floor``."""
    return [(f, t) for f, t in zip(curve["fpr"], curve["tpr"]) if f >= floor * (1 - 1e-9)]


def roc_figure(
    curves: dict[str, dict[str, list[float]]], floors: dict[str, float] | None = None
) -> str | None:
    """Log-log ROC curves of the membership attacks, with the chance diagonal.

    Args:
        curves: attack name → ``{"fpr": [...], "tpr": [...]}``.
        floors: attack name → the lowest FPR its non-members resolve (1 / non-members);
            the curve is not drawn below it, and the axis starts at the lowest floor.
    """
    curves = {k: v for k, v in curves.items() if v and v.get("fpr")}
    if not curves:
        return None
    floors = floors or {}
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    lo = min(floors.values()) if floors else 1e-4
    ax.plot([lo, 1], [lo, 1], color=_GREY, ls=":", label="chance")
    for (name, c), col in zip(curves.items(), (_BLUE, _ORANGE, _GREEN, _RED)):
        pts = visible_roc(c, floors.get(name, lo))
        if not pts:
            continue
        ax.step([f for f, _ in pts], [max(t, lo) for _, t in pts], where="post", color=col,
                label=name)
    if floors:
        ax.axvline(lo, color=_GREY, lw=0.8, ls="--")
        ax.text(lo, 1.0, " 1 / non-members", fontsize=7, va="top", color=_GREY)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Membership inference ROC (log-log)")
    return _encode(fig)


def inversion_figure(inv: dict[str, Any]) -> str | None:
    """Grid: true images, then each view's reconstruction (rows), with PSNR/SSIM labels."""
    import numpy as np

    truth = inv.get("truth")
    views = inv.get("views") or {}
    if truth is None or not views:
        return None
    rows = [("original", np.asarray(truth), None)]
    titles = {"single_site": "one site's update", "secure_sum": "secure sum\n(target: the sum)",
              "dp": "update with DP noise"}
    for k, v in views.items():
        rows.append((titles.get(k, k), np.asarray(v["images"]), v))
    n = len(rows[0][1])
    plt = _plt()
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n + 1.6, 1.25 * len(rows)), squeeze=False)
    for i, (name, imgs, meta) in enumerate(rows):
        for j in range(n):
            ax = axes[i][j]
            im = imgs[j].reshape(imgs[j].shape[-2:]) if j < len(imgs) else np.zeros((8, 8))
            ax.imshow(im, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        label = (
            name if meta is None else f"{name}\nPSNR {meta['psnr']:.1f} dB\nSSIM {meta['ssim']:.2f}"
        )
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Gradient inversion of one site's batch", fontsize=10)
    return _encode(fig)
