"""The HTML report of a DP synthetic-data release (``release.json`` -> ``report.html``).

One self-contained page (embedded PNGs, no JavaScript) per ``veil synth`` run: for each
site's release the ε spent (from the ledger), the utility (train on synthetic vs on real),
the marginal errors, the distance-to-closest-record histograms, the membership attack's
ROC and, when a policy was given, each target met or missed. It reuses the run report's
style sheet, table helpers and figure encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from veil.errors import DataError
from veil.report import figures
from veil.report.html import _CSS, _e, _img, _num, _pct, _table, _td

__all__ = ["SYNTH_REPORT", "build_synth_html", "policy_html", "render_synth_report"]

SYNTH_REPORT = "report.html"


def _bars(one_way: dict[str, float], title: str) -> str | None:
    if not one_way:
        return None
    plt = figures._plt()
    names = list(one_way)
    fig, ax = plt.subplots(figsize=(5.6, 0.25 * len(names) + 1.2))
    ax.barh(names, [one_way[n] for n in names], color="#1f77b4")
    ax.invert_yaxis()
    ax.set_xlabel("total variation distance (real vs synthetic)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    return figures._encode(fig)


def _pair_heatmap(names: list[str], two_way: dict[str, float]) -> str | None:
    if not two_way:
        return None
    import numpy as np

    plt = figures._plt()
    idx = {n: i for i, n in enumerate(names)}
    m = np.full((len(names), len(names)), np.nan)
    for k, v in two_way.items():
        a, b = k.split("|", 1)
        if a in idx and b in idx:
            m[idx[a], idx[b]] = m[idx[b], idx[a]] = v
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    im = ax.imshow(m, cmap="magma_r", vmin=0)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(im, ax=ax, label="2-way TVD")
    ax.set_title("2-way marginal error")
    return figures._encode(fig)


def _dcr_hist(dcr: dict[str, Any]) -> str | None:
    if not dcr.get("hist_train"):
        return None
    import numpy as np

    plt = figures._plt()
    k = len(dcr["hist_train"])
    edges = np.linspace(0, dcr.get("hist_max", 1.0) or 1.0, k + 1)
    mid = (edges[:-1] + edges[1:]) / 2
    w = edges[1] - edges[0]
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    ax.bar(mid - w / 4, dcr["hist_train"], width=w / 2, label="to training records")
    ax.bar(mid + w / 4, dcr["hist_holdout"], width=w / 2, label="to hold-out records")
    ax.set_xlabel("distance of a synthetic record to the closest real record")
    ax.set_ylabel("synthetic records")
    ax.legend(fontsize=8)
    ax.set_title("Distance to closest record")
    return figures._encode(fig)


def policy_html(pol: dict[str, Any] | None) -> str:
    """The policy verdict (``PolicyResult.to_dict()``) as HTML: a banner and a table."""
    if not pol:
        return '<p class="note">No [policy] targets were given.</p>'
    rows = [[_td(_e(t["name"])), _td(_num(t["target"], "{:.4g}"), True),
             _td(_num(t["measured"], "{:.4g}"), True),
             _td("met" if t["met"] else "<b>MISSED</b>"), _td(_e(t["detail"]))]
            for t in pol.get("targets", [])]
    head = ('<p class="ok">Every policy target is met: releasable.</p>' if pol.get("passed")
            else '<p class="flag">A policy target is missed: not releasable.</p>')
    return head + _table(["target", "bound", "measured", "", "detail"], rows)


def _release_section(site: str, item: dict[str, Any]) -> str:
    rel, ev = item["release"], item["evaluation"]
    ut, mem, dcr, mar = (ev.get(k) or {} for k in ("utility", "membership", "dcr", "marginals"))
    cards = [
        ("ε spent (ledger)", _num(rel.get("epsilon"), "{:.3f}") + f" at δ={rel.get('delta'):g}"),
        ("accuracy: synthetic → real", _pct(ut.get("accuracy_synthetic"))),
        ("accuracy: real → real", _pct(ut.get("accuracy_real"))),
        ("MIA TPR @ 0.1 % FPR", _num((mem.get("tpr_at_fpr") or {}).get("0.001"), "{:.4f}")),
        ("MIA AUC", _num(mem.get("auc"), "{:.3f}")),
        ("closer to train than hold-out", _pct(dcr.get("share_closer_to_train"))),
    ]
    card_html = "".join(f'<div class="card"><div class="v">{v}</div><div class="k">{_e(k)}'
                        "</div></div>" for k, v in cards)
    attr = rel.get("attribute_epsilon") or {}
    attr_rows = [[_td(_e(c)), _td(_num(v, "{:.3f}"), True),
                  _td("sensitive" if c in rel.get("sensitive", []) else "")]
                 for c, v in attr.items()]
    names = [c["name"] for c in rel["schema"]["columns"]]
    roc = figures.roc_figure({mem.get("name", "attack"): mem.get("roc", {})})
    return f"""
<section><h2>Release: {_e(site)}</h2>
<p class="meta">mechanism {_e(rel.get('mechanism'))} · {item.get('train_rows')} real rows in,
{rel.get('rows')} synthetic rows out ({_e(item.get('file'))}) · {item.get('holdout_rows')}
held-out rows for evaluation · accountant {_e(rel.get('accountant'))} (dp-accounting)</p>
<div class="cards">{card_html}</div>
<h3>Policy</h3>{policy_html(item.get('policy'))}
<h3>Utility and fidelity</h3>
<p>Classifier ({_e(ut.get('classifier'))}) trained on the synthetic table and tested on real
hold-out rows: {_pct(ut.get('accuracy_synthetic'))}; trained on the real rows:
{_pct(ut.get('accuracy_real'))} (gap {_num((ut.get('accuracy_gap') or 0) * 100, '{:.2f}')}
points). Mean 1-way error {_num(mar.get('one_way_mean'))}, mean 2-way error
{_num(mar.get('two_way_mean'))} (total variation distance).</p>
<div class="row">{_img(_bars(mar.get('one_way', {}), '1-way marginal error'), '1-way errors')}
{_img(_pair_heatmap(names, mar.get('two_way', {})), '2-way errors')}</div>
<h3>Leakage</h3>
<p>The attacker holds the synthetic table and scores a candidate by minus its distance to
the closest synthetic record ({mem.get('n_members')} members, {mem.get('n_nonmembers')}
non-members; the lowest resolvable FPR is 1/{mem.get('n_nonmembers')}). Exact copies of
training records: {_pct(dcr.get('exact_copies_of_train'))} (of hold-out records:
{_pct(dcr.get('exact_copies_of_holdout'))}).</p>
<div class="row">{_img(roc, 'membership ROC')}{_img(_dcr_hist(dcr), 'DCR histogram')}</div>
<h3>Per-column ε (one record's value of that column changes)</h3>
{_table(['column', 'ε', 'tier'], attr_rows) if attr_rows else ''}
<p class="note">Record-level ε ({_num(rel.get('epsilon'), '{:.3f}')}) protects whole records
(add or remove one); the per-column values protect only that column's value and are
reported for the sensitivity tiers (docs/synthetic-data.md).</p>
<h3>Measured marginals</h3><p>{', '.join(_e('×'.join(c)) for c in rel.get('cliques', []))}</p>
</section>"""


def build_synth_html(doc: dict[str, Any]) -> str:
    """The page for a ``release.json`` document."""
    body = "".join(_release_section(s, it) for s, it in doc.get("releases", {}).items())
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>veil synthetic data: {_e(doc.get('name'))}</title><style>{_CSS}</style></head>
<body><main><h1>DP synthetic data: {_e(doc.get('name'))}</h1>
<p class="meta">Threat model: whoever receives a synthetic table learns about any one real
record at most what (ε, δ)-DP allows (add-or-remove-one record, per site for per-site
synthesis); the evaluation beside it measures utility and what a closest-record attacker
achieves. The generator saw only each site's training rows.</p>
{body}</main></body></html>"""


def render_synth_report(out_dir: str | Path) -> Path:
    """Write ``report.html`` for the ``release.json`` in ``out_dir``.

    Raises:
        DataError: ``release.json`` is missing or unreadable.
    """
    d = Path(out_dir)
    try:
        doc = json.loads((d / "release.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {d / 'release.json'}: {e}") from None
    path = d / SYNTH_REPORT
    path.write_text(build_synth_html(doc))
    return path
