"""What a reader of a client-level DP run's record can learn (issue 10, items 2 and 3).

Adversaries read ``record.json`` (and the HTML report) of a finished run:

* one recomputes every round's cohort from the recorded seed with the generator the
  runtime used to use; with ``privacy.secure_rng = true`` it must fail, or find no
  cohort in the record at all;
* one scans for un-noised per-round statistics of the private updates.

The federation draws client-level DP cohorts from the privacy CSPRNG
(:func:`veil.privacy.release.draw_cohort`) and records only released measurements
(:func:`veil.privacy.release.release_measurements`). Before that, the first adversary
recomputed 4 of 4 rounds and the record held ``clip/*`` and ``quantize/clipped_fraction``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

UNNOISED = ("clip/clipped", "clip/norm", "quantize/clipped_fraction")


def _dp_run(tmp_path: Path, sampling: str, secagg: bool) -> tuple[dict[str, Any], Path]:
    from veil.app import parse_config, train

    cfg = parse_config({
        "name": "dp", "seed": 5, "rounds": 4, "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "sites": 12, "partition": "iid", "limit": 480},
        "model": {"name": "logreg"},
        "federation": {"cohort_size": 6, "sampling": sampling, "dropout_rate": 0.0},
        "aggregation": {"secure_aggregation": secagg, "quantize_range": 0.5},
        "privacy": {"enabled": True, "target_epsilon": 8.0, "secure_rng": True,
                    "accountant": "rdp",
                    "client_level": {"enabled": True, "clip_norm": 0.5,
                                     "noise_multiplier": None}},
        "audit": {"log": False},
    })
    out = train(cfg)
    return json.loads((out.run_dir / "record.json").read_text()), out.run_dir


def _keys(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [str(k) for k in obj] + [k for v in obj.values() for k in _keys(v)]
    if isinstance(obj, list):
        return [k for v in obj for k in _keys(v)]
    return []


def test_the_seed_does_not_reproduce_secret_cohorts(tmp_path: Path) -> None:
    rec, _ = _dp_run(tmp_path, "poisson", secagg=False)
    seed, n, q = rec["seeds"]["seed"], rec["plan"]["n_sites"], 6 / 12
    matched = 0
    for r in rec["rounds"]:
        seen = r.get("cohort", r.get("survivors"))
        if seen is None:
            continue  # nothing recorded: nothing to recompute
        guess = np.flatnonzero(np.random.default_rng([seed, r["round"], 0xC0]).random(n) < q)
        matched += np.array_equal(np.asarray(seen), guess)
    assert matched == 0
    # the record says how ε was accounted, and that its cohort lists void amplification
    acct = rec["privacy"]["privacy_accounting"]
    assert acct["neighbouring_relation"] == "add_or_remove_one_site"
    assert acct["sampling"] == "poisson" and acct["sampling_rate"] == 0.5
    assert acct["amplification_holds_against_record_reader"] is False


def test_a_dp_record_holds_no_unnoised_statistic(tmp_path: Path) -> None:
    from veil.report import render_report

    rec, run_dir = _dp_run(tmp_path, "fixed", secagg=True)  # quantisation measures clipping
    keys = set(_keys(rec["rounds"]))
    assert not keys & set(UNNOISED)
    assert any(k.startswith("dp_fedavg/") for k in keys)  # the noised numbers are there
    html = Path(render_report(run_dir)).read_text()
    assert not any(u in html for u in UNNOISED)
