"""``veil report RUN``: one self-contained HTML page for a privacy officer.

Inputs: ``record.json`` (required) and ``audit.json`` (optional) in the run directory.
Figures are embedded PNGs; the page needs no server, no network and no JavaScript.
Every optional key may be missing; the page says so instead of failing.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from veil.audit.run import attack_results
from veil.errors import DataError
from veil.report import figures
from veil.report.attacks import attack_section
from veil.report.common import e, img, num, pct, table, td
from veil.report.ledger import claimed, privacy_section

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


_e, _num, _pct, _img, _table, _td = e, num, pct, img, table, td


_claimed = claimed


def _accounting(record: dict[str, Any]) -> str:
    """How client-level ε was accounted, and whether the run is private at all."""
    pv = record.get("privacy") or {}
    out = []
    if pv.get("private") is False:
        out.append("<p class='flag'><b>NOT PRIVATE.</b> "
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
    if (final.get("metrics") or {}).get("task") == "regression":  # test_accuracy holds R²
        headline = ("final R² (test data)", _num(final.get("test_accuracy"), "{:.3f}"), "")
    else:
        headline = ("final test accuracy", _pct(final.get("test_accuracy")), "")
    cards = [
        headline,
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
        top = f" (≤ {_num(one.get('epsilon_max'), '{:.2f}')} possible)" \
            if one.get("epsilon_max") is not None else ""
        if eps is None:  # nothing to compare with: neither a pass nor a fail
            cards.append((f"ε̂ with {one.get('m')} canaries: lower bound only, no DP",
                          _num(one.get("epsilon_lower"), "{:.2f}") + top, ""))
        else:
            blind = isinstance(one.get("epsilon_max"), (int, float)) and one["epsilon_max"] <= eps
            cards.append((f"ε̂ (one-run audit, {one.get('m')} canaries)",
                          _num(one.get("epsilon_lower"), "{:.2f}") + top,
                          "bad" if bad else "" if blind else "good"))
    mem = (audit or {}).get("membership") or {}
    aucs = [r.get("auc") for r in attack_results(mem).values()]
    if aucs:
        cards.append(("best MIA AUC", _num(max(a for a in aucs if a is not None), "{:.3f}"), ""))
    return '<div class="cards">' + "".join(
        f'<div class="card {c}"><div class="v">{v}</div><div class="k">{_e(k)}</div></div>'
        for k, v, c in cards) + "</div>"


def _warnings(record: dict[str, Any]) -> str:
    """Red boxes for what must not be missed: a failed run, a site never in the model."""
    final = record.get("final") or {}
    out = []
    if final.get("failed"):
        out.append(f"<p class='flag'>⚠ The run failed: {_e(final['failed'])}. It released no "
                   "model.</p>")
    bad = final.get("sites_rejected_every_round") or []
    if bad:
        out.append(
            f"<p class='flag'>⚠ Site(s) {_e(', '.join(str(s) for s in bad))} sent an invalid "
            "(NaN/inf) update in every round they were selected for: their data is not in "
            "the model. Check their data and the learning rate.</p>"
        )
    return "".join(out)


def _quality(record: dict[str, Any]) -> str:
    """The final model's metrics on the test data and, with data.files, on each site's own."""
    from veil.models.metrics import METRIC_LABELS, Metrics, metrics_table

    final = record.get("final") or {}
    met, sites = final.get("metrics"), final.get("site_metrics")
    if not isinstance(met, dict) and not sites:
        return ""
    p = ["<section><h2>How good the model is</h2>"]
    if isinstance(met, dict):
        rows = [[_td(_e(METRIC_LABELS.get(k, k))), _td(_num(v), True)] for k, v in met.items()
                if k not in ("task", "n", "notes")]
        p.append(f"<p>On the test data ({_e(met.get('n', '?'))} examples, "
                 f"{_e(met.get('task', ''))}):</p>" + _table(["metric", "value"], rows))
    if isinstance(sites, dict) and sites:
        try:
            header, rows = metrics_table({k: Metrics.from_dict(v) for k, v in sites.items()})
        except DataError:
            header, rows = ["site"], []
        p.append("<p>On each site's own test data:</p>" + _table(
            header, [[_td(_e(c), i > 0) for i, c in enumerate(r)] for r in rows]))
    if final.get("metrics_error"):
        p.append(f"<p class='note'>Metrics not computed: {_e(final['metrics_error'])}</p>")
    return "".join(p) + "</section>"


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
         _cards(record, audit), _warnings(record)]
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
    p.append(_quality(record))
    p.append("<section><h2>What it cost</h2><div class='row'>")
    p.append(_img(figures.accuracy_figure(rounds), "accuracy per round"))
    p.append(_img(figures.bytes_figure(rounds), "bytes per site per round"))
    p.append("</div><p class='note'>Rounds are numbered from 1, as <code>veil train</code> "
             "prints them (record.json counts them from 0 in its <code>round</code> key).</p>"
             "</section>")
    p.append(privacy_section(record, audit))
    p.append(attack_section(audit))
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


def _check_audit(audit: Any, path: Path) -> None:
    """Refuse an ``audit.json`` whose sections have the wrong types, naming the section."""
    if audit is None:
        return
    if not isinstance(audit, dict):
        raise DataError(f"{path} must hold a JSON object, not a {type(audit).__name__}")
    for key in ("membership", "one_run", "inversion"):
        if audit.get(key) is not None and not isinstance(audit[key], dict):
            raise DataError(f"{path}: '{key}' must be a JSON object, got "
                            f"{type(audit[key]).__name__}; re-run `veil audit`")


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
    from veil.federation.record import read_record

    run = Path(run_dir)
    record = read_record(run)  # typed errors: missing, not JSON, sections of wrong types
    try:
        audit = (
            json.loads((run / "audit.json").read_text()) if (run / "audit.json").is_file() else None
        )
    except json.JSONDecodeError as e:
        raise DataError(f"cannot parse the run's JSON files in {run}: {e}") from None
    _check_audit(audit, run / "audit.json")
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
