"""What a reader of a client-level DP run's record can learn (issue 10, items 2 and 3).

Adversaries read ``record.json`` (and the HTML report) of a finished run:

* one recomputes every round's cohort from the recorded seed with the generator the
  runtime used to use; with ``privacy.secure_rng = true`` it must fail, or find no
  cohort in the record at all;
* one scans for un-noised per-round statistics of the private updates.

Both need the federation runtime to draw cohorts from the privacy CSPRNG and to pass its
measurements through :func:`veil.privacy.release.release_measurements`; until that wiring
lands these tests are expected to fail (strict xfail: they turn red once it works, so the
marks get removed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

UNNOISED = ("clip/clipped", "clip/norm", "quantize/clipped_fraction")
PENDING = pytest.mark.xfail(
    strict=True, reason="issue 10: runtime wiring of draw_cohort / release_measurements pending"
)


def _dp_run(tmp_path: Path, sampling: str, secagg: bool) -> dict[str, Any]:
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
    return json.loads((out.run_dir / "record.json").read_text())


def _keys(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [str(k) for k in obj] + [k for v in obj.values() for k in _keys(v)]
    if isinstance(obj, list):
        return [k for v in obj for k in _keys(v)]
    return []


@PENDING
def test_the_seed_does_not_reproduce_secret_cohorts(tmp_path: Path) -> None:
    rec = _dp_run(tmp_path, "poisson", secagg=False)
    seed, n, q = rec["seeds"]["seed"], rec["plan"]["n_sites"], 6 / 12
    matched = 0
    for r in rec["rounds"]:
        seen = r.get("cohort", r.get("survivors"))
        if seen is None:
            continue  # nothing recorded: nothing to recompute
        guess = np.flatnonzero(np.random.default_rng([seed, r["round"], 0xC0]).random(n) < q)
        matched += np.array_equal(np.asarray(seen), guess)
    assert matched == 0


@PENDING
def test_a_dp_record_holds_no_unnoised_statistic(tmp_path: Path) -> None:
    rec = _dp_run(tmp_path, "fixed", secagg=True)  # quantisation measures clipping
    keys = set(_keys(rec["rounds"]))
    assert not keys & set(UNNOISED)
