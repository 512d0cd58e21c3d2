"""Dropout in the vectorised trainer: per-site seeded masks, reproducible, and it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from veil.data import load_digits, partition
from veil.errors import ConfigError
from veil.training import LocalConfig, SiteData, Trainer
from veil.training.dropout import DropoutPlan


def _net(seed: int = 0, p: float = 0.5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 3))


def _flat(m: nn.Module) -> torch.Tensor:
    return torch.cat([q.detach().reshape(-1) for q in m.parameters()])


def _same_data_sites(n_sites: int = 3) -> SiteData:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    # every site holds the same 16 examples: only the dropout masks can tell them apart
    return SiteData(np.tile(x, (n_sites, 1)), np.tile(y, n_sites),
                    [np.arange(16) + 16 * i for i in range(n_sites)])


def test_sites_get_different_masks_and_same_seed_same_run() -> None:
    model = _net()
    data = _same_data_sites()
    t = Trainer(model, "classification", LocalConfig(2, 8, 0.1), secure_rng=False)
    assert not t.fast_path and t.randomness["dropout"]["layers"] == {"2": 0.5}
    flat = _flat(model)
    up = t.train(flat, data, np.arange(3), seed=7, round=4)
    # same data, same global model: the sites differ only in their masks (and shuffles,
    # which are keyed by site id too); pairwise distinct updates
    assert all(not torch.allclose(up[i], up[j]) for i in range(3) for j in range(i + 1, 3))
    again = Trainer(_net(), "classification", LocalConfig(2, 8, 0.1), secure_rng=False)
    assert torch.equal(again.train(flat, data, np.arange(3), seed=7, round=4), up)
    other = t.train(flat, data, np.arange(3), seed=8, round=4)
    assert not torch.allclose(other, up)


def test_masks_differ_per_site_and_keep_rate() -> None:
    plan = DropoutPlan(_net(p=0.25))
    ex = torch.zeros(6)
    m = plan.masks(ex, seed=0, round=0, site_ids=[0, 1], step=0, width=512)[0]
    assert m.shape == (2, 512, 16)
    assert not torch.equal(m[0], m[1])
    # keep rate 0.75 (16 * 512 * 2 draws: tolerance 0.02 is > 8 standard deviations)
    assert abs(float((m > 0).float().mean()) - 0.75) < 0.02
    assert torch.allclose(m[m > 0], torch.tensor(1 / 0.75))  # inverted dropout scaling
    # a site's masks do not depend on the batch width or the other sites
    m2 = plan.masks(ex, seed=0, round=0, site_ids=[1], step=0, width=100)[0]
    assert torch.equal(m2[0], m[1, :100])


def test_site_update_independent_of_cohort() -> None:
    model = _net()
    data = _same_data_sites(4)
    t = Trainer(model, "classification", LocalConfig(1, 4, 0.1), secure_rng=False)
    flat = _flat(model)
    all4 = t.train(flat, data, np.arange(4), seed=1, round=2)
    alone = t.train(flat, data, np.array([2]), seed=1, round=2)
    torch.testing.assert_close(alone[0], all4[2], rtol=1e-5, atol=1e-6)


def test_channel_dropout_masks_whole_channels() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Dropout2d(0.5), nn.Flatten(), nn.Linear(36, 2))
    plan = DropoutPlan(net)
    m = plan.masks(torch.zeros(1, 5, 5), seed=0, round=0, site_ids=[0], step=0, width=3)[0]
    assert m.shape == (1, 3, 4, 1, 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 1, 5, 5)).astype(np.float32)
    data = SiteData(x, rng.integers(0, 2, size=12), np.array_split(np.arange(12), 2))
    up = Trainer(net, "classification", LocalConfig(1, 4, 0.1), secure_rng=False).train(
        _flat(net), data, np.arange(2), seed=0, round=0)
    assert torch.isfinite(up).all() and up.abs().sum() > 0


def test_alpha_dropout_refused_naming_fix() -> None:
    net = nn.Sequential(nn.Linear(6, 8), nn.AlphaDropout(0.2), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match=r"AlphaDropout.*use nn.Dropout"):
        Trainer(net, "classification", LocalConfig(1, 4, 0.1))


def test_training_with_dropout_learns_digits() -> None:
    d = load_digits(seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(64, 10))
    parts = partition(d.y_train, 4, "iid", seed=0)
    data = SiteData(d.x_train.astype(np.float32), d.y_train, parts)
    t = Trainer(model, "classification", LocalConfig(1, 32, 0.1), secure_rng=False)
    flat = _flat(model)
    w = torch.tensor([len(p) for p in parts], dtype=torch.float32)
    for r in range(15):  # FedAvg, example-weighted
        up = t.train(flat, data, np.arange(4), seed=0, round=r)
        flat = flat + (up * w[:, None]).sum(0) / w.sum()
    from veil.models.params import load_flat_params

    load_flat_params(model, flat)
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(d.x_test.astype(np.float32))).argmax(1).numpy()
               == d.y_test).mean()
    assert acc > 0.85, acc  # chance is 0.1
