"""``veil synth CONFIG``: DP synthetic tables from a TOML config, evaluated and reported.

:func:`run_synth` assembles the run (it sits at the top layer because it uses synth,
audit and report): for each site, split its table locally, synthesise from the training
part, evaluate against the held-out part, check the ``[policy]``, write
``synthetic[-SITE].csv``, ``release.json`` and ``report.html``. Config keys:
:mod:`veil.synth.config` and docs/synthetic-data.md.

Exit status: 0 when written and every ``[policy]`` target is met; 3 when a target is
missed (the tables are still written and the report marks them not releasable); 2 on a
configuration or data error.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["POLICY_MISSED", "register", "run", "run_synth"]

#: Exit status when a [policy] target is missed.
POLICY_MISSED = 3


def register(sub: Any) -> None:
    """Add the ``synth`` sub-command (imports nothing heavy)."""
    p = sub.add_parser(
        "synth",
        help="DP synthetic data from a table (or each site's table), evaluated, with a report",
        description="Turn a CSV table (or one per site) into a DP synthetic table at a stated "
        "(epsilon, delta), evaluate utility and leakage, and write report.html.",
    )
    p.add_argument("config", help="TOML config with [synth], [data], [schema] (and [policy])")
    p.add_argument("--out", help="output directory (default: output_dir/name from the config)")


def run_synth(config: str | Path | Mapping[str, Any], out_dir: str | Path | None = None
              ) -> Path:
    """Synthesise, evaluate, check the policy and report as a ``veil synth`` config says.

    Args:
        config: the TOML path, or the dict :func:`veil.synth.config.load_synth_config` returns.
        out_dir: output directory (default: ``output_dir / name`` from the config).

    Returns:
        The output directory (``release.json``, ``report.html``, the synthetic CSVs).

    Raises:
        ConfigError, DataError: bad config, missing files, data outside the schema.
    """
    from veil.audit.policy import Policy, check_policy, measurements_from_release
    from veil.audit.synth_eval import evaluate_release
    from veil.federation.record import write_json_atomic
    from veil.privacy.ledger import PrivacyLedger
    from veil.report.synth import render_synth_report
    from veil.synth.api import synthesize
    from veil.synth.config import load_site_tables, load_synth_config, write_csv_table
    from veil.synth.mechanisms import ACCOUNTANT
    from veil.synth.schema import n_rows

    cfg = load_synth_config(config) if not isinstance(config, Mapping) else dict(config)
    settings, schema = cfg["settings"], cfg["schema"]
    policy = Policy.from_dict(cfg["policy"]) if cfg.get("policy") else None
    out = Path(out_dir) if out_dir is not None else Path(cfg["output_dir"]) / cfg["name"]
    tables = load_site_tables(cfg)
    out.mkdir(parents=True, exist_ok=True)
    ledger = PrivacyLedger(settings.delta, ACCOUNTANT)
    releases: dict[str, Any] = {}
    for site, (train, hold) in tables.items():
        entity = "dataset" if site == "dataset" else f"site:{site}"
        rel = synthesize(train, schema, settings, ledger=ledger, entity=entity)
        ev = evaluate_release(rel, train, hold, cfg["classifier"], settings.seed)
        item: dict[str, Any] = {"release": rel.summary(), "evaluation": ev,
                                "train_rows": n_rows(train), "holdout_rows": n_rows(hold)}
        if policy is not None:
            item["policy"] = check_policy(policy, measurements_from_release(ev)).to_dict()
        item["file"] = "synthetic.csv" if site == "dataset" else f"synthetic-{site}.csv"
        write_csv_table(out / item["file"], rel.table, schema)
        releases[site] = item
    write_json_atomic(out / "release.json",
                      {"name": cfg["name"], "releases": releases, "ledger": ledger.state_dict()})
    render_synth_report(out)
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``veil synth``; returns the exit status."""
    import json

    out = run_synth(args.config, args.out)
    doc = json.loads((out / "release.json").read_text())
    missed = False
    for site, item in doc["releases"].items():
        rel, ut = item["release"], item["evaluation"].get("utility") or {}
        mem = item["evaluation"].get("membership") or {}
        line = (f"{site}: eps={rel['epsilon']:.3f} (delta={rel['delta']:g}), "
                f"{rel['rows']} synthetic rows")
        if ut:
            line += (f", accuracy synthetic {ut['accuracy_synthetic']:.4f} "
                     f"vs real {ut['accuracy_real']:.4f}")
        tpr = (mem.get("tpr_at_fpr") or {}).get("0.001")
        line += ", MIA TPR@0.1%FPR " + (f"{tpr:.4f}" if isinstance(tpr, (int, float)) else
                                       f"not resolvable ({mem.get('n_nonmembers')} non-members)")
        pol = item.get("policy")
        if pol is not None:
            line += ", policy " + ("met" if pol["passed"] else "MISSED")
            missed |= not pol["passed"]
        print(line)
    print(f"wrote {out / 'release.json'} and {out / 'report.html'}")
    return POLICY_MISSED if missed else 0
