"""``veil report RUN``: one self-contained HTML page for a privacy officer.

Inputs: ``record.json`` (required) and ``audit.json`` (optional) in the run directory.
Figures are embedded PNGs; the page needs no server, no network and no JavaScript.
Every optional key may be missing; the page says so instead of failing.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from pathlib import Path
from typing import Any

from veil.errors import DataError
from veil.report import figures

__all__ = ["render_report", "build_html", "REPORT"]

REPORT = "report.html"

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;\
background:#f5f6f8;color:#1d2330}
main{max-width:1080px;margin:0 auto;padding:24px}
h1{margin:0 0 4px 0;font-size:26px} \
h2{border-bottom:2px solid #dde1e7;padding-bottom:4px;margin-top:32px}
.meta{color:#5b6475;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:18px 0}
.card{background:#fff;border-radius:8px;padding:12px 16px;min-width:150px;\
box-shadow:0 1px 3px rgba(0,0,0,.08)}
.card .v{font-size:22px;font-weight:600} .card .k{font-size:12px;color:#5b6475}
.card.bad{border-left:5px solid #d62728} .card.good{border-left:5px solid #2ca02c}
section{background:#fff;border-radius:8px;padding:4px 20px 16px;margin:14px 0;\
box-shadow:0 1px 3px rgba(0,0,0,.06)}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.row>img,.row>div{flex:1 1 440px;max-width:520px;min-width:0}
.row>img{width:48%}
img{max-width:100%} table{border-collapse:collapse;font-size:14px;margin:8px 0}
td,th{border-bottom:1px solid #e5e8ee;padding:4px 10px;text-align:left} th{background:#f0f2f5}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.chip{display:inline-block;background:#e8eefc;color:#1f3d8a;border-radius:12px;padding:3px 10px;\
margin:2px;font-size:13px}
.arrow{color:#8a93a5;margin:0 2px}
.flag{background:#fde8e8;color:#a31515;border:1px solid #d62728;border-radius:6px;padding:8px 12px;\
font-weight:600}
.ok{background:#e9f7ec;color:#1c6b2c;border:1px solid #2ca02c;border-radius:6px;padding:8px 12px}
.note{color:#5b6475;font-size:13px} \
pre{background:#f5f6f8;padding:10px;overflow:auto;font-size:12px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any, fmt: str = "{:.3f}", none: str = "—") -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        return none
    return fmt.format(v)


def _pct(v: Any) -> str:
    return _num(v * 100 if isinstance(v, (int, float)) else None, "{:.2f} %")


def _img(uri: str | None, alt: str) -> str:
    return (
        f'<img src="{uri}" alt="{_e(alt)}">'
        if uri
        else f'<p class="note">No data for {_e(alt)}.</p>'
    )


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(rows_c for rows_c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _td(v: str, num: bool = False) -> str:
    return f'<td class="n">{v}</td>' if num else f"<td>{v}</td>"


def _claimed(
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


def _accounting(record: dict[str, Any]) -> str:
    """How client-level ε was accounted, and whether the run is private at all."""
    pv = record.get("privacy") or {}
    out = []
    if pv.get("private") is False:
        out.append("<p class='bad'><b>NOT PRIVATE.</b> "
                   f"{_e(pv.get('not_private_reason', 'the run is marked not private'))}</p>")
    acct = pv.get("privacy_accounting")
    if isinstance(acct, dict):
        out.append(
            "<h3>Client-level accounting</h3><p>"
            f"neighbouring relation: {_e(acct.get('neighbouring_relation'))}; amplification: "
            f"{_e(acct.get('amplification'))}. {_e(acct.get('note', ''))}</p>"
        )
    return "".join(out)


def _cards(record: dict[str, Any], audit: dict[str, Any] | None) -> str:
    final = record.get("final") or {}
    eps, target = _claimed(record, audit)
    cards = [
        ("final test accuracy", _pct(final.get("test_accuracy")), ""),
        (
            "rounds completed",
            _e(final.get("rounds_completed", len(record.get("rounds") or []))),
            "",
        ),
        ("ε spent (claimed)", _num(eps, "{:.2f}") if eps is not None else "no DP", ""),
    ]
    pv = record.get("privacy") or {}
    if pv.get("private") is False:  # privacy.debug_unnoised_statistics: un-noised releases
        cards[-1] = ("ε spent (NOT VALID: run not private)",
                     f"{_num(eps, '{:.2f}')} — not valid" if eps is not None else "not valid",
                     "bad")
    if target is not None:
        cards.append(("ε budget", _num(target, "{:.2f}"), ""))
    bpr = [r.get("bytes_per_site_mean") for r in record.get("rounds") or []]
    bpr = [b for b in bpr if isinstance(b, (int, float))]
    if bpr:
        cards.append(("bytes / site / round", f"{sum(bpr) / len(bpr) / 1024:.1f} KiB", ""))
    comp = ((record.get("config") or {}).get("aggregation") or {}).get("compression")
    if comp and comp != "none":  # aggregation.compression: bytes above are its payloads
        cards.append(("compression", _e(comp), ""))
    one = (audit or {}).get("one_run")
    if one:
        bad = bool(one.get("exceeds_claim"))
        cards.append(("ε̂ (one-run audit, 95 %)", _num(one.get("epsilon_lower"), "{:.2f}"),
                      "bad" if bad else "good"))
    mem = (audit or {}).get("membership") or {}
    aucs = [r.get("auc") for r in _attacks(mem).values()]
    if aucs:
        cards.append(("best MIA AUC", _num(max(a for a in aucs if a is not None), "{:.3f}"), ""))
    return '<div class="cards">' + "".join(
        f'<div class="card {c}"><div class="v">{v}</div><div class="k">{_e(k)}</div></div>'
        for k, v, c in cards) + "</div>"


def _attacks(mem: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, r in mem.items():
        if name == "lira" and isinstance(r, dict):
            for v in ("online", "offline"):
                if isinstance(r.get(v), dict):
                    out[f"LiRA ({v})"] = r[v]
        elif isinstance(r, dict) and "auc" in r:
            out["loss threshold" if name == "loss" else name] = r
    return out


def _privacy_section(record: dict[str, Any], audit: dict[str, Any] | None) -> str:
    rounds = record.get("rounds") or []
    eps, target = _claimed(record, audit)
    pv = record.get("privacy") or {}
    parts = ["<section><h2>Privacy spent</h2>"]
    if eps is None and not pv:
        parts.append('<p class="note">This run used no differential privacy: the released model '
                     "carries no formal bound on what it reveals about training examples.</p>")
    fig = figures.epsilon_figure(rounds, target)
    if fig:
        parts.append(_img(fig, "ε per round"))
    if pv:
        rows = [[_td(_e(k)), _td(_e(json.dumps(v) if isinstance(v, (dict, list)) else v))]
                for k, v in pv.items()]
        parts.append(_table(["ledger", "value"], rows))
    parts.append("</section>")
    return "".join(parts)


def _attack_section(audit: dict[str, Any] | None) -> str:
    if not audit:
        return (
            '<section><h2>What the attacks achieved</h2><p class="note">No audit yet: run '
            "<code>veil audit RUN</code> to attack this run, then render the report again.</p>"
            "</section>"
        )
    parts = ["<section><h2>What the attacks achieved</h2>"]
    att = _attacks(audit.get("membership") or {})
    if att:
        parts.append(
            "<h3>Membership inference against the released model</h3><div class='row'><div>"
        )
        rows = [[_td(_e(n)), _td(_num(r.get("auc")), True),
                 _td(_pct((r.get("tpr_at_fpr") or {}).get("0.001")), True),
                 _td(_pct((r.get("tpr_at_fpr") or {}).get("0.01")), True),
                 _td(_e(f"{r.get('n_members', '?')} / {r.get('n_nonmembers', '?')}"), True)]
                for n, r in att.items()]
        parts.append(
            _table(["attack", "AUC", "TPR @ 0.1 % FPR", "TPR @ 1 % FPR", "members / non"], rows)
        )
        parts.append('<p class="note">AUC 0.5 and TPR equal to the FPR mean the attacker does no '
                     "better than guessing. TPR at low FPR is what matters: it counts examples "
                     "identified with confidence.</p>")
        lira = (audit.get("membership") or {}).get("lira") or {}
        if lira.get("reference_training"):
            parts.append(f'<p class="note">LiRA reference models: {_e(lira.get("n_refs"))} × '
                         f'{_e(lira["reference_training"])}.</p>')
        parts.append("</div><div>")
        parts.append(
            _img(figures.roc_figure({n: r.get("roc") or {} for n, r in att.items()}), "ROC")
        )
        parts.append("</div></div>")
    one = audit.get("one_run")
    parts.append("<h3>One-run canary audit (Steinke, Nasr &amp; Jagielski 2023)</h3>")
    if one:
        eh, ec = one.get("epsilon_lower"), one.get("claimed_epsilon")
        if one.get("exceeds_claim"):
            parts.append(
                f'<p class="flag">⚠ Empirical lower bound ε̂ = {_num(eh, "{:.2f}")} exceeds '
                f"the claimed ε = {_num(ec, '{:.2f}')}: the privacy guarantee does not hold "
                "(a bug in the mechanism, its accounting or its implementation).</p>"
            )
        else:
            parts.append(
                f'<p class="ok">ε̂ = {_num(eh, "{:.2f}")} ≤ claimed ε = '
                f"{_num(ec, '{:.2f}', 'none (no DP)')}: consistent with the guarantee.</p>"
            )
        rows = [[_td(_e(k)), _td(_e(_num(one.get(k), "{:.4g}") if isinstance(one.get(k), float)
                                    else one.get(k)), True)]
                for k in ("epsilon_lower", "claimed_epsilon", "m", "k_pos", "k_neg", "v", "delta",
                          "confidence") if k in one]
        parts.append(_table(["quantity", "value"], rows))
        parts.append(f'<p class="note">{_e(one.get("m"))} canaries (mislabelled examples), each '
                     "inserted with probability ½; the auditor guesses membership from their loss. "
                     "ε̂ is the largest ε that the number of correct guesses rules out with the "
                     "stated confidence (valid lower bound; ε̂ above ε signals a bug).</p>")
    else:
        parts.append('<p class="note">This run inserted no canaries, so there is no ε̂.</p>')
    inv = audit.get("inversion")
    parts.append("<h3>Gradient inversion against what the server sees</h3>")
    if inv:
        parts.append("<div class='row'><div>")
        parts.append(_img(figures.inversion_figure(inv), "gradient inversion"))
        parts.append("</div><div>")
        names = {"single_site": "one site's update (no SecAgg)",
                 "secure_sum": f"secure sum of {inv.get('n_sites', 'n')} sites",
                 "dp": f"clipped + DP noise (σ = {inv.get('noise_multiplier', '?')})"}
        rows = [
            [
                _td(_e(names.get(k, k))),
                _td(_num(v.get("psnr"), "{:.1f}"), True),
                _td(_num(v.get("ssim"), "{:.2f}"), True),
            ]
            for k, v in (inv.get("views") or {}).items()
        ]
        rows.append(
            [
                _td("random images (chance)"),
                _td(_num(inv.get("noise_psnr"), "{:.1f}"), True),
                _td(""),
            ]
        )
        if inv.get("mean_image_psnr") is not None:
            rows.append([_td("the average training image"),
                         _td(_num(inv.get("mean_image_psnr"), "{:.1f}"), True), _td("")])
        parts.append(_table(["what the server sees", "PSNR (dB)", "SSIM"], rows))
        parts.append(f'<p class="note">A batch of {_e(inv.get("batch_size"))} images at one site, '
                     "one local SGD step at the released model. Higher PSNR/SSIM = the attacker "
                     "sees the images.</p></div></div>")
    else:
        parts.append('<p class="note">Not run (needs image data).</p>')
    parts.append("</section>")
    return "".join(parts)


def build_html(record: dict[str, Any], audit: dict[str, Any] | None = None,
               log_head: str | None = None, policy: dict[str, Any] | None = None) -> str:
    """The report page as a string (see :func:`render_report`); ``policy`` is the
    ``policy.json`` that ``veil train --enforce-policy`` wrote, if any."""
    rounds = record.get("rounds") or []
    name = record.get("name", "run")
    p = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
         f"<title>veil report: {_e(name)}</title><style>{_CSS}</style></head><body><main>",
         f"<h1>veil run report: {_e(name)}</h1>",
         f"<div class='meta'>created {_e(record.get('created', '?'))} · veil "
         f"{_e(record.get('veil_version', '?'))} · report rendered "
         f"{_e(_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))}</div>",
         _cards(record, audit)]
    p.append("<section><h2>What was protected, and how</h2><h3>Threat model</h3>")
    p.append(
        f"<p>{_e(record.get('threat_model') or 'No threat model recorded.')}</p>"
    )
    p.append(_accounting(record))
    p.append("<h3>Pipeline</h3><p>")
    stages = [str(s) for s in record.get("pipeline") or []]
    p.append(
        " <span class='arrow'>→</span> ".join(f"<span class='chip'>{_e(s)}</span>" for s in stages)
        or "<span class='note'>no stages recorded</span>"
    )
    plan = record.get("plan") or {}
    data = (record.get("config") or {}).get("data") or {}
    p.append("</p>" + _table(["plan", "value"], [[_td(_e(k)), _td(_e(v))] for k, v in
             [("data set", data.get("dataset", plan.get("dataset"))),
              ("partition", data.get("partition")), ("sites", plan.get("n_sites")),
              ("cohort per round", plan.get("cohort_size")), ("rounds", plan.get("rounds")),
              ("model parameters", plan.get("n_parameters"))] if v is not None]) + "</section>")
    p.append("<section><h2>What it cost</h2><div class='row'>")
    p.append(_img(figures.accuracy_figure(rounds), "accuracy per round"))
    p.append(_img(figures.bytes_figure(rounds), "bytes per site per round"))
    p.append("</div></section>")
    p.append(_privacy_section(record, audit))
    p.append(_attack_section(audit))
    if policy is not None:
        from veil.report.synth import policy_html

        p.append(f"<section><h2>Policy</h2>{policy_html(policy)}</section>")
    p.append("<section><h2>Reproducibility</h2>")
    seeds = record.get("seeds") or {}
    vers = record.get("versions") or {}
    p.append(_table(["item", "value"], [[_td(_e(k)), _td(_e(v))] for k, v in
             list(seeds.items()) + list(vers.items())]))
    if log_head:
        p.append(f"<p class='note'>Audit log head hash: <code>{_e(log_head)}</code></p>")
    p.append("<details><summary>full run config</summary><pre>"
             f"{_e(json.dumps(record.get('config', {}), indent=1, default=str))}</pre></details>")
    p.append("</section></main></body></html>")
    return "".join(p)


def render_report(run_dir: str | Path, log_path: str | Path | None = None) -> Path:
    """Write ``report.html`` into ``run_dir`` from ``record.json`` (+ ``audit.json``).

    Args:
        run_dir: the run directory.
        log_path: optional audit log whose head hash is printed in the report (default:
            ``audit.log`` in the run directory's parent, if present and valid).

    Returns:
        Path of the written report.

    Raises:
        DataError: ``record.json`` is missing or not JSON.
    """
    run = Path(run_dir)
    rec_p = run / "record.json"
    if not rec_p.is_file():
        raise DataError(f"no record.json in {run}: is it a veil run directory?")
    try:
        record = json.loads(rec_p.read_text())
        audit = (
            json.loads((run / "audit.json").read_text()) if (run / "audit.json").is_file() else None
        )
    except json.JSONDecodeError as e:
        raise DataError(f"cannot parse the run's JSON files in {run}: {e}") from None
    head = None
    lp = Path(log_path) if log_path is not None else run.parent / "audit.log"
    if lp.is_file():
        from veil.audit.log import AuditLog

        res = AuditLog(lp).verify()
        head = (
            res.head if res.ok else f"log FAILS verification at entry {res.bad_index}: {res.reason}"
        )
    out = run / REPORT
    pol_p = run / "policy.json"
    try:
        policy = json.loads(pol_p.read_text()) if pol_p.is_file() else None
    except json.JSONDecodeError as e:
        raise DataError(f"cannot parse {pol_p}: {e}") from None
    out.write_text(build_html(record, audit, head, policy), encoding="utf-8")
    return out
