"""The HTML report renders from record.json (+ audit.json), robust to missing keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from veil.errors import DataError
from veil.report import build_html, render_report

_ROC = {"fpr": [1e-4, 1e-3, 1e-2, 1.0], "tpr": [1e-3, 5e-3, 3e-2, 1.0]}


def _record() -> dict:
    rounds = [{"round": i, "test_accuracy": 0.5 + 0.04 * i, "test_loss": 1.0 - 0.05 * i,
               "bytes_sent": {"0": 1000 + i, "1": 1200}, "bytes_per_site_mean": 1100.0,
               "epsilon_client": 0.2 * (i + 1)} for i in range(5)]
    return {"veil_version": "0.1.0", "name": "demo", "created": "2026-01-01T00:00:00Z",
            "config": {"data": {"dataset": "digits", "partition": "iid"}},
            "versions": {"python": "3.11", "torch": "2"}, "seeds": {"seed": 0, "secure_rng": True},
            "threat_model": "Honest-but-curious <server>.", "pipeline": ["clip", "noise", "secagg"],
            "plan": {"rounds": 5, "n_sites": 2, "cohort_size": 2.0}, "rounds": rounds,
            "final": {"test_accuracy": 0.66, "rounds_completed": 5},
            "privacy": {"target_epsilon": 1.0, "delta": 1e-5, "epsilon_spent": 1.0}}


def _audit(eps_hat: float) -> dict:
    att = {"auc": 0.51, "tpr_at_fpr": {"0.001": 0.001, "0.01": 0.01}, "roc": _ROC,
           "n_members": 10, "n_nonmembers": 10}
    img = [[[[0.5] * 8] * 8]] * 2
    return {
        "claimed_epsilon": 1.0,
        "membership": {
            "loss": att,
            "lira": {"online": att, "offline": att, "n_refs": 4, "reference_training": "test"},
        },
        "one_run": {
            "epsilon_lower": eps_hat,
            "claimed_epsilon": 1.0,
            "m": 100,
            "k_pos": 10,
            "k_neg": 10,
            "v": 20,
            "delta": 1e-5,
            "confidence": 0.95,
            "exceeds_claim": eps_hat > 1.0,
        },
        "inversion": {
            "truth": img,
            "views": {
                k: {"psnr": 10.0, "ssim": 0.2, "images": img}
                for k in ("single_site", "secure_sum", "dp")
            },
            "n_sites": 2,
            "batch_size": 2,
            "noise_multiplier": 1.0,
            "noise_psnr": 5.0,
        },
    }


def _write(run: Path, record: dict, audit: dict | None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "record.json").write_text(json.dumps(record))
    if audit is not None:
        (run / "audit.json").write_text(json.dumps(audit))


def test_full_report_is_self_contained(tmp_path: Path) -> None:
    _write(tmp_path / "r", _record(), _audit(0.3))
    page = render_report(tmp_path / "r").read_text()
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) == 5  # accuracy, bytes, epsilon, ROC, inversion
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "&lt;server&gt;" in page  # escaped
    assert "class=\"flag\"" not in page and "consistent with the guarantee" in page


def test_red_flag_when_eps_hat_exceeds_claim(tmp_path: Path) -> None:
    page = build_html(_record(), _audit(2.5))
    assert 'class="flag"' in page and "exceeds" in page


def test_minimal_record_renders(tmp_path: Path) -> None:
    _write(tmp_path / "m", {"name": "bare"}, None)
    page = render_report(tmp_path / "m").read_text()
    assert "veil run report: bare" in page and "No audit yet" in page


def test_missing_record_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        render_report(tmp_path)
