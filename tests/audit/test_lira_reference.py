"""LiRA with references trained like the target (through the federation) tells the truth.

* A target that clearly over-fits (random labels: only memorised; train accuracy 100 %)
  is caught: AUC ≥ 0.6 (online and offline).
* A target trained without the evaluated members at all gives AUC 0.5 ± 0.03 averaged
  over seeds (slow).
"""

from __future__ import annotations

import numpy as np
import pytest

from veil.audit.mia import model_outputs
from veil.audit.reference import LiraSetup, _train_one, lira_like_target, reference_masks
from veil.data import Dataset
from veil.errors import ConfigError
from veil.federation.config import parse_config


def _cfg(tmp_path, seed: int = 1, **kw):  # type: ignore[no-untyped-def]
    raw = {
        "name": "target", "seed": seed, "rounds": 6, "output_dir": str(tmp_path),
        "data": {"sites": 2, "partition": "iid"},
        "model": {"name": "mlp", "hidden": [128]},
        "local": {"epochs": 8, "batch_size": 16, "lr": 0.1, "momentum": 0.9},
        "federation": {"cohort_size": None, "dropout_rate": 0.0, "server_optimizer": "fedavg",
                       "server_lr": 1.0, "eval_every": 6},
        "audit": {"log": False},
    }
    raw.update(kw)
    return parse_config(raw)


def _random_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 16)).astype(np.float32), rng.integers(0, 4, n)


def _target(cfg, x: np.ndarray, y: np.ndarray, train: np.ndarray):  # type: ignore[no-untyped-def]
    ds = Dataset("syn", x[train], y[train], x[~train], y[~train], "classification", 4)
    return _train_one(cfg, ds)


def test_reference_masks_are_balanced_and_independent_of_the_target() -> None:
    m = reference_masks(10, 500, 0.8, seed=3)
    assert (m.sum(0) == 8).all()  # every example IN for round(0.8 * 10) references
    assert abs(m.sum(1).mean() - 400) < 1e-9  # references see as many as the target did
    assert (reference_masks(4, 50, 0.9, 0).sum(0) == 2).all()  # clamped: >= 2 OUT
    assert not np.array_equal(m, reference_masks(10, 500, 0.8, seed=4))
    with pytest.raises(ConfigError):
        reference_masks(3, 10, 0.5, 0)


def test_lira_catches_an_overfitted_target(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x, y = _random_labels(240, seed=0)
    member = np.zeros(len(y), bool)
    member[:120] = True
    cfg = _cfg(tmp_path)
    target = _target(cfg, x, y, member)
    acc = (model_outputs(target, x).argmax(1) == y)
    assert acc[member].mean() > 0.95 and acc[~member].mean() < 0.4  # over-fits
    res = lira_like_target(target, LiraSetup(cfg, n_refs=6, seed=0), x, y, member, "syn", 4)
    assert res["online"]["auc"] >= 0.6 and res["offline"]["auc"] >= 0.6
    assert res["online"]["tpr_at_fpr"]["0.001"] is None  # 120 non-members: 0.1 % unresolved
    assert res["online"]["tpr_at_fpr"]["0.01"] is not None
    lo, hi = res["online"]["ci"]["auc"]
    assert lo <= res["online"]["auc"] <= hi
    assert "federated runs of the target's config" in res["reference_training"]


@pytest.mark.slow
def test_lira_on_a_target_without_the_members_is_chance(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Target trained on other data: members and non-members are both unseen.

    300 + 300 examples per seed: AUC sd ≈ 0.024 per seed, ≈ 0.014 over 3 seeds; the
    tolerance 0.03 is ~2 sd of the mean.
    """
    aucs = []
    for seed in range(3):
        x, y = _random_labels(900, seed=10 + seed)
        member = np.zeros(600, bool)
        member[:300] = True
        cfg = _cfg(tmp_path / str(seed), seed=seed)
        other = np.r_[np.zeros(600, bool), np.ones(300, bool)]  # the target's real data
        target = _target(cfg, x, y, other)
        res = lira_like_target(
            target, LiraSetup(cfg, n_refs=6, seed=seed), x[:600], y[:600], member, "syn", 4
        )
        aucs.append((res["online"]["auc"] + res["offline"]["auc"]) / 2)
    assert abs(float(np.mean(aucs)) - 0.5) <= 0.03, aucs
