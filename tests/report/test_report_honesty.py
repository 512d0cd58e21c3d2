"""The report does not mislead: canaries without DP, unresolved TPRs, labelled ledger,
1-based rounds, what the secure-sum inversion shows, warnings for lost sites."""

from __future__ import annotations

import copy
import re

from test_report import _audit, _record

from veil.report import build_html
from veil.report.figures import _series, visible_roc


def _no_dp(record: dict) -> dict:
    r = copy.deepcopy(record)
    r.pop("privacy")
    for rd in r["rounds"]:
        rd.pop("epsilon_client")
    return r


def test_canary_box_on_non_dp_run_says_lower_bound_only() -> None:
    audit = _audit(0.8)
    audit["claimed_epsilon"] = None
    audit["one_run"].update(claimed_epsilon=None, exceeds_claim=False, epsilon_max=3.1, r=20)
    page = build_html(_no_dp(_record()), audit)
    assert "consistent with the guarantee" not in page
    assert "Not a DP run: there is no guarantee to compare ε̂ with" in page
    assert "lower bound only" in page
    assert "from 100 canaries (20 guesses, 20 right)" in page
    assert "could show at most ε̂ = 3.10" in page
    assert 'class="card good"' not in page  # no green card without a claim to pass


def test_canaries_too_few_to_detect_a_violation_are_said_so() -> None:
    audit = _audit(0.2)
    audit["one_run"]["epsilon_max"] = 0.9  # below the claimed ε = 1
    page = build_html(_record(), audit)
    assert "could not have detected a violation" in page
    assert "consistent with the guarantee" not in page


def test_tpr_at_low_fpr_only_where_non_members_resolve_it() -> None:
    audit = _audit(0.3)  # 10 non-members: neither 0.1 % nor 1 % FPR is resolved
    page = build_html(_record(), audit)
    assert page.count("n/a (10 non-members; needs ≥ 1000)") == 3
    assert page.count("n/a (10 non-members; needs ≥ 100)") == 3
    for r in (audit["membership"]["loss"], audit["membership"]["lira"]["online"],
              audit["membership"]["lira"]["offline"]):
        r["n_nonmembers"] = 2000
        r["tpr_at_fpr"] = {"0.001": 0.0123, "0.01": 0.05}
    page = build_html(_record(), audit)
    assert "needs ≥" not in page and "1.23 %" in page


def test_roc_not_drawn_below_one_over_non_members() -> None:
    curve = {"fpr": [0.0, 1e-4, 1e-3, 1e-2, 1.0], "tpr": [0.0, 0.01, 0.02, 0.1, 1.0]}
    pts = visible_roc(curve, 1 / 360)
    assert pts == [(1e-2, 0.1), (1.0, 1.0)]


def test_ledger_is_labelled() -> None:
    rec = _record()
    rec["privacy"] = {"privacy_target_epsilon": 4.0, "privacy_delta": 1e-5,
                      "privacy_planned_epsilon": {"client": 3.9, "sample": 2.0},
                      "epsilon_client": 3.5, "epsilon_sample_max": 1.7,
                      "noise": {"sample_noise_multiplier": {"120": 1.1, "130": 1.05}}}
    page = build_html(rec, None)
    ledger = page[page.index("<th>ledger</th>"):]
    ledger = ledger[: ledger.index("</table>")]
    assert "ε spent, client level: one site&#x27;s whole data" in ledger
    assert "ε spent, sample level: one example at one site (largest over sites)" in ledger
    assert "δ (the same δ for the client- and sample-level ε)" in ledger
    assert "ε planned for the whole run, client level" in ledger
    assert "120 examples: 1.1" in ledger
    assert not re.search(r"<td>(epsilon_client|privacy_delta|privacy_target_epsilon)</td>",
                         ledger)


def test_rounds_are_one_based_like_the_cli() -> None:
    xs, _ = _series(_record()["rounds"], "test_accuracy")
    assert xs == [1, 2, 3, 4, 5]  # record rounds 0..4
    assert "Rounds are numbered from 1" in build_html(_record(), None)


def test_secure_sum_inversion_explains_the_target_and_its_reference() -> None:
    audit = _audit(0.3)
    audit["inversion"].update(sum_average_psnr=11.0, sum_average_ssim=0.25)
    page = build_html(_record(), audit)
    assert "the attack's target is the sum" in page
    assert "the average of the 2 sites&#x27; images in the sum" in page
    assert "11.0" in page and "0.25" in page


def test_site_rejected_every_round_and_failed_run_are_flagged() -> None:
    rec = _record()
    rec["final"]["sites_rejected_every_round"] = [1, 4]
    page = build_html(rec, None)
    assert "Site(s) 1, 4 sent an invalid (NaN/inf) update in every round" in page
    rec["final"]["failed"] = "every one of the 5 rounds aborted"
    assert "The run failed: every one of the 5 rounds aborted" in build_html(rec, None)
    assert "class='flag'" not in build_html(_record(), None)


def test_regression_headline_and_metrics_are_labelled() -> None:
    rec = _record()
    rec["final"].update(test_accuracy=0.41, metrics={"task": "regression", "n": 89,
                                                     "r2": 0.41, "mae": 44.2})
    rec["final"]["site_metrics"] = {"a": {"task": "regression", "n": 30, "r2": 0.3,
                                          "mae": 40.0, "rmse": 50.0, "mse": 2500.0}}
    page = build_html(rec, None)
    assert "final R² (test data)" in page and "final test accuracy" not in page
    assert "R² (coefficient of determination)" in page and "MAE (mean absolute error)" in page
    assert "On each site's own test data" in page
