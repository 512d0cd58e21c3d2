"""Gradient inversion: recovers a single small-batch update, fails under DP noise."""

from __future__ import annotations

import numpy as np
import pytest

from veil.audit.inversion import infer_labels, inversion_experiment, psnr, site_update, ssim
from veil.data import load_digits
from veil.models import build_model


def test_metrics_identities() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((8, 8))
    assert psnr(a, a) == 100.0 and ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, np.clip(a + 0.1, 0, 1)) > psnr(a, rng.random((8, 8)))
    assert ssim(a, rng.random((8, 8))) < 0.5


def test_label_inference_for_distinct_labels() -> None:
    d = load_digits(image=True)
    idx = [np.nonzero(d.y_train == c)[0][0] for c in (2, 5, 7)]
    model = build_model("mlp", (1, 8, 8), 10, hidden=(32,))
    u = site_update(model, d.x_train[idx], d.y_train[idx])
    assert sorted(infer_labels(model, u, 3).tolist()) == [2, 5, 7]


def test_single_site_recovered_secure_sum_and_dp_not() -> None:
    d = load_digits(image=True)
    rng = np.random.default_rng(3)
    model = build_model("mlp", (1, 8, 8), 10, hidden=(64,), seed=0)
    batches = [(d.x_train[i], d.y_train[i]) for i in (rng.choice(len(d.y_train), 2, replace=False)
                                                         for _ in range(4))]
    r = inversion_experiment(model, batches, (1, 8, 8), steps=200, seed=0)
    mean = d.x_train.mean(0)
    base = float(np.mean([psnr(mean, t) for t in batches[0][0]]))
    v = r["views"]
    assert v["single_site"]["psnr"] > base + 10 and v["single_site"]["ssim"] > 0.8
    assert v["dp"]["psnr"] < base and v["dp"]["ssim"] < 0.4
    assert v["secure_sum"]["psnr"] < v["single_site"]["psnr"] - 10
    assert np.asarray(v["dp"]["images"]).shape == (2, 1, 8, 8)
