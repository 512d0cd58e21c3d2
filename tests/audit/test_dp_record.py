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


def _dp_run(
    tmp_path: Path, sampling: str, secagg: bool, rounds: int = 4, resume: bool = False,
    z: float | None = None, **privacy: Any,
) -> tuple[dict[str, Any], Path]:
    from veil.app import parse_config, train

    cfg = parse_config({
        "name": "dp", "seed": 5, "rounds": rounds, "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "sites": 12, "partition": "iid", "limit": 480},
        "model": {"name": "logreg"},
        "federation": {"cohort_size": 6, "sampling": sampling, "dropout_rate": 0.0},
        "aggregation": {"summation": "secagg" if secagg else "plain", "quantize_range": 0.5},
        "privacy": {"enabled": True, "target_epsilon": 8.0, "secure_rng": True,
                    "accountant": "rdp", **privacy,
                    "client_level": {"enabled": True, "clip_norm": 0.5,
                                     "noise_multiplier": z}},
        "audit": {"log": False},
    })
    out = train(cfg, resume=resume)
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
    # the record says how ε was accounted; no cohort is recorded, so amplification holds
    acct = rec["privacy"]["privacy_accounting"]
    assert acct["neighbouring_relation"] == "add_or_remove_one_site"
    assert acct["sampling"] == "poisson" and acct["sampling_rate"] == 0.5
    assert acct["amplification_holds_against_record_reader"] is True and acct["amplified"]
    assert rec["privacy"]["private"] is True


def test_a_dp_record_holds_no_unnoised_statistic(tmp_path: Path) -> None:
    from veil.report import render_report

    rec, run_dir = _dp_run(tmp_path, "fixed", secagg=True)  # quantisation measures clipping
    keys = set(_keys(rec["rounds"]))
    assert not keys & set(UNNOISED)
    assert any(k.startswith("dp_fedavg/") for k in keys)  # the noised numbers are there
    html = Path(render_report(run_dir)).read_text()
    assert not any(u in html for u in UNNOISED)


#: what would say who took part in a round
MEMBERSHIP = ("cohort", "survivors", "bytes_sent", "rejected")


def _membership_found(rounds: list[dict[str, Any]]) -> list[str]:
    return [f"round {r.get('round')}: {k}" for r in rounds for k in MEMBERSHIP if k in r]


def test_a_reader_of_a_dp_record_finds_no_cohort(tmp_path: Path) -> None:
    """The adversary reads record.json, the checkpoint's state and the report: no lists."""
    import torch

    from veil.federation.checkpoint import unpack
    from veil.report import render_report

    rec, run_dir = _dp_run(tmp_path, "poisson", secagg=False, rounds=2, z=1.0)
    # resume to 4 rounds: the resumed rounds draw fresh secret cohorts, still unrecorded
    rec, run_dir = _dp_run(tmp_path, "poisson", secagg=False, rounds=4, resume=True, z=1.0)
    assert [r["round"] for r in rec["rounds"]] == [0, 1, 2, 3]
    assert _membership_found(rec["rounds"]) == []
    # nor how many: under hidden Poisson cohorts a count is a sensitivity-1 statistic
    # (tests/privacy/test_hidden_cohort_release.py)
    assert not any({"n_selected", "n_summed"} & set(r) for r in rec["rounds"])
    # the checkpoint lies in the run directory too: its copy of the records is read back
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state = {k: v for k, v in json.loads(ck["state"])["__map__"]}
    ck_rounds = unpack(state["records"], ck["tensors"])
    assert len(ck_rounds) == 4 and _membership_found(ck_rounds) == []
    html = Path(render_report(run_dir)).read_text()
    assert "Client-level accounting" in html and "not recorded" in html


def test_recorded_cohorts_are_charged_without_amplification(tmp_path: Path) -> None:
    """record_cohorts = true: cohorts in the record, ε = the unamplified dp-accounting value."""
    from dp_accounting import dp_event as dpe
    from dp_accounting.rdp import RdpAccountant

    rec, _ = _dp_run(tmp_path, "poisson", secagg=False, record_cohorts=True)
    assert len(_membership_found(rec["rounds"])) == 3 * 4  # cohort, survivors, bytes per round
    acct = rec["privacy"]["privacy_accounting"]
    assert acct["cohorts_recorded"] and not acct["amplified"]
    assert acct["epsilon_holds_against_record_reader"]
    z = rec["privacy"]["noise"]["client_noise_multiplier"]
    direct = RdpAccountant().compose(dpe.SelfComposedDpEvent(dpe.GaussianDpEvent(z), 4))
    eps_direct = direct.get_epsilon(1e-5)
    assert abs(rec["privacy"]["epsilon_client"] - eps_direct) <= 1e-9 * eps_direct
    # calibrated for the unamplified charge: within the budget, and not the amplified value
    amp = RdpAccountant().compose(
        dpe.SelfComposedDpEvent(dpe.PoissonSampledDpEvent(0.5, dpe.GaussianDpEvent(z)), 4)
    ).get_epsilon(1e-5)
    assert eps_direct <= 8.0 + 1e-9 and amp < 0.9 * eps_direct


def test_the_debug_flag_marks_the_run_not_private(tmp_path: Path) -> None:
    from veil.report import render_report

    rec, run_dir = _dp_run(tmp_path, "fixed", secagg=True, debug_unnoised_statistics=True)
    keys = set(_keys(rec["rounds"]))
    assert keys & set(UNNOISED)  # the un-noised diagnostics are released ...
    assert rec["privacy"]["private"] is False  # ... and the run says it is not private
    assert "debug_unnoised_statistics" in rec["privacy"]["not_private_reason"]
    assert rec["threat_model"].startswith("Sites keep") and "NOT PRIVATE" in rec["threat_model"]
    html = Path(render_report(run_dir)).read_text()
    assert "NOT VALID" in html and "NOT PRIVATE" in html
