"""BatchNorm (always) and Dropout (under DP-SGD) are refused up front, naming the layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from veil.errors import ConfigError
from veil.training import LocalConfig, SiteData, Trainer, dpsgd_trainer


def _net(mid: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), mid, nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(8), nn.SyncBatchNorm(8)])
def test_batchnorm_refused_with_layer_and_fix(layer) -> None:
    with pytest.raises(ConfigError, match=r"layer 1 \(\w*BatchNorm\w*\).*GroupNorm.*LayerNorm"):
        Trainer(_net(layer), "classification", LocalConfig(1, 4, 0.1))


def test_dropout_refused_under_dpsgd_with_layer_named() -> None:
    with pytest.raises(ConfigError, match=r"layer 1 \(Dropout\).*sample-level DP.*p=0"):
        dpsgd_trainer(_net(nn.Dropout(0.5)), "classification", LocalConfig(1, 4, 0.1),
                      noise_multiplier=1.0, max_grad_norm=1.0)


def test_groupnorm_layernorm_and_p0_dropout_train() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 4)).astype(np.float32)
    y = rng.integers(0, 2, size=24)
    data = SiteData(x, y, np.array_split(np.arange(24), 3))
    for mid in (nn.GroupNorm(2, 8), nn.LayerNorm(8), nn.Dropout(0.0)):
        model = _net(mid)
        t = Trainer(model, "classification", LocalConfig(1, 4, 0.1), secure_rng=False)
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        up = t.train(flat, data, np.arange(3), seed=0, round=0)
        assert up.shape == (3, flat.numel()) and torch.isfinite(up).all() and up.abs().sum() > 0
