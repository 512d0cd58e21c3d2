"""audit_run end to end on a small hand-made run directory (the runtime's file layout)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from veil.audit import AuditLog, audit_run, insert_canaries, save_canaries
from veil.audit.run import load_run_data
from veil.audit.shadow import TrainParams, train_models
from veil.models import build_model


def _make_run(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    cfg = {"seed": 0, "data": {"dataset": "digits", "sites": 3, "partition": "iid", "limit": 400},
           "model": {"name": "mlp", "hidden": [32]}}
    record = {"name": "demo", "config": cfg, "plan": {"n_sites": 3}, "model_path": "model.pt",
              "privacy": {"epsilon_spent": 1.0, "delta": 1e-5}, "rounds": []}
    (run / "record.json").write_text(json.dumps(record))
    ds = load_run_data(record)
    x, y, cs = insert_canaries(ds.x_train, ds.y_train, 40, seed=5, n_classes=10)
    save_canaries(run / "canaries.npz", cs)
    model = build_model("mlp", ds.input_shape, 10, hidden=(32,))
    flat = train_models(model, x, y, np.ones((1, len(y)), bool), TrainParams(epochs=60, lr=0.05), 0)
    torch.save({"params": flat[0], "config": cfg}, run / "model.pt")
    return run


def test_audit_run_writes_audit_json_and_log(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    log = tmp_path / "runs" / "audit.log"
    out = audit_run(run, lira_refs=4, lira_epochs=5, inversion_steps=30, log_path=log)
    saved = json.loads((run / "audit.json").read_text())
    assert saved["membership"]["loss"]["auc"] == out["membership"]["loss"]["auc"]
    assert out["membership"]["loss"]["auc"] > 0.54  # overfit model; AUC sd ~0.02 at 360/360
    assert set(out["membership"]["lira"]) >= {"online", "offline"}
    one = out["one_run"]
    assert one["m"] == 40 and one["claimed_epsilon"] == 1.0
    assert one["exceeds_claim"] == (one["epsilon_lower"] > 1.0)
    assert set(out["inversion"]["views"]) == {"single_site", "secure_sum", "dp"}
    assert 0 < out["inversion"]["sum_average_psnr"] < 100  # the secure-sum view's reference
    assert AuditLog(log).verify().ok and AuditLog(log).entries()[0]["kind"] == "audit"


def test_reference_models_mimic_the_runs_dp_sgd() -> None:
    from veil.audit.run import _reference_dp

    rec = {
        "config": {
            "privacy": {"enabled": True, "sample_level": {"enabled": True, "max_grad_norm": 0.7}}
        },
        "privacy": {"noise": {"sample_noise_multiplier": {"280": 4.5, "290": 4.7, "300": 4.9}}},
    }
    dp = _reference_dp(rec)
    assert dp is not None and dp.noise_multiplier == 4.7 and dp.clip == 0.7
    assert _reference_dp({"config": {"privacy": {"enabled": False}}}) is None
    rec["privacy"]["noise"]["sample_noise_multiplier"] = float("nan")
    assert _reference_dp(rec) is None
