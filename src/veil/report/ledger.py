"""The report's "Privacy spent" section: ε per round and the ledger in labelled numbers.

The record's privacy summary (``record.json`` → ``privacy``) uses short keys; the report
says what each number is: which ε is *client level* (a site's whole data: one site joining
or leaving), which is *sample level* (one training example at one site), and that one δ
goes with both.
"""

from __future__ import annotations

import json
import math
from typing import Any

from veil.report import figures
from veil.report.common import e, img, num, table, td

__all__ = ["claimed", "privacy_section", "ledger_rows"]

_CLIENT = "client level: one site's whole data"
_SAMPLE = "sample level: one example at one site"
_LABELS = {
    "epsilon_client": f"ε spent, {_CLIENT}",
    "epsilon_sample_max": f"ε spent, {_SAMPLE} (largest over sites)",
    "epsilon_spent": "ε spent",
    "epsilon": "ε spent",
    "privacy_target_epsilon": "ε budget (target, each level)",
    "target_epsilon": "ε budget (target, each level)",
    "privacy_delta": "δ (the same δ for the client- and sample-level ε)",
    "delta": "δ (the same δ for the client- and sample-level ε)",
    "privacy_accountant": "accountant (dp-accounting)",
    "privacy_secure_rng": "privacy randomness from a CSPRNG",
    "epsilon_sample_bound": "sample-level ε released as",
    "private": "run is private",
    "epsilon_spent_accountant": "accountant of ε spent (the whole search)",
}
_SKIP = ("privacy_accounting", "not_private_reason")  # shown in their own paragraphs


def claimed(
    record: dict[str, Any], audit: dict[str, Any] | None
) -> tuple[float | None, float | None]:
    """(ε spent, ε budget) — the same reading of the record as the audit uses."""
    from veil.audit.run import claimed_epsilon

    eps, _delta = claimed_epsilon(record)
    if eps is None and audit:
        eps = audit.get("claimed_epsilon")
    pv = record.get("privacy") or {}
    target = pv.get("privacy_target_epsilon", pv.get("target_epsilon"))
    if target is None and (record.get("config", {}).get("privacy") or {}).get("enabled"):
        target = record["config"]["privacy"].get("target_epsilon")

    def ok(v: Any) -> float | None:
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

    return ok(eps), ok(target)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return num(v, "{:.4g}")
    if isinstance(v, (dict, list)):
        return e(json.dumps(v))
    return e(v if v is not None else "—")


def _level(k: str) -> str:
    return {"client": _CLIENT, "sample": _SAMPLE}.get(k, k)


def ledger_rows(pv: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of the privacy summary, each number said for what it is."""
    rows: list[tuple[str, str]] = []
    for k, v in pv.items():
        if k in _SKIP:
            continue
        if k == "privacy_planned_epsilon" and isinstance(v, dict):
            rows += [(f"ε planned for the whole run, {_level(str(lv))}", _value(x))
                     for lv, x in v.items()]
        elif k in ("epsilon_spent", "epsilon") and isinstance(v, dict):
            rows += [(f"ε spent, {_level(str(lv))}", _value(x)) for lv, x in v.items()]
        elif k == "epsilon_sample_per_site" and isinstance(v, dict):
            rows += [(f"ε spent, sample level, site {s}", _value(x)) for s, x in v.items()]
        elif k == "trial" and isinstance(v, dict):  # the released trial of a search
            rows += [(f"this trial: {lab}", val) for lab, val in ledger_rows(
                {("privacy_target_epsilon" if tk == "target_epsilon" else tk): tv
                 for tk, tv in v.items()})]
        elif k == "noise" and isinstance(v, dict):
            for nk, nv in v.items():
                if isinstance(nv, dict):  # {site size: σ}
                    nv = ", ".join(f"{s} examples: {_value(x)}" for s, x in nv.items())
                    rows.append((f"noise: {nk}", e(nv)))
                else:
                    rows.append((f"noise: {nk}", _value(nv)))
        else:
            rows.append((_LABELS.get(k, k), _value(v)))
    return rows


def privacy_section(record: dict[str, Any], audit: dict[str, Any] | None) -> str:
    """ε per round against the budget, and the labelled ledger table."""
    rounds = record.get("rounds") or []
    eps, target = claimed(record, audit)
    pv = record.get("privacy") or {}
    parts = ["<section><h2>Privacy spent</h2>"]
    if eps is None and not pv:
        parts.append('<p class="note">This run used no differential privacy: the released model '
                     "carries no formal bound on what it reveals about training examples.</p>")
    fig = figures.epsilon_figure(rounds, target)
    if fig:
        parts.append(img(fig, "ε per round"))
    if pv:
        parts.append(table(["ledger", "value"],
                           [[td(e(k)), td(v, True)] for k, v in ledger_rows(pv)]))
        parts.append(f'<p class="note">Client-level ε ({e(_CLIENT)}) bounds what the released '
                     "model and the aggregates reveal about whether a site took part; "
                     f"sample-level ε ({e(_SAMPLE)}) about any one training example. Both are "
                     "computed by dp-accounting at the δ shown.</p>")
    tuning = record.get("tuning")
    if isinstance(tuning, dict):
        parts.append(
            '<p class="note">This model was selected by an accounted search '
            "(<code>veil tune</code>): a secret, random number of trials, each a full run "
            f"with ε ≤ {_value(tuning.get('trial_target_epsilon'))}, scored by a noisy "
            "accuracy; only the best was kept. The ε spent above covers the whole search "
            f"(RepeatAndSelect, RDP). Selected: {e(json.dumps(tuning.get('selected')))}.</p>"
        )
    parts.append("</section>")
    return "".join(parts)
