"""One site trained alone with an ordinary torch loop: the reference the tests compare with."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from veil.models.params import flat_params, load_flat_params
from veil.training.config import LocalConfig
from veil.training.data import per_example_loss
from veil.training.schedule import batch_schedule

__all__ = ["train_site_reference"]


def train_site_reference(
    model: nn.Module,
    task: str,
    config: LocalConfig,
    global_flat: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    site_id: int,
    seed: int,
    round: int,
) -> torch.Tensor:
    """Train one site alone with ``torch.optim.SGD`` on the same per-site batch schedule.

    Returns:
        The site's update (final parameters minus ``global_flat``).
    """
    m = copy.deepcopy(model)
    load_flat_params(m, global_flat)
    opt = torch.optim.SGD(
        m.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    idx, mask = batch_schedule(
        np.asarray([len(y)]), np.asarray([site_id]), config.batch_size, config.epochs, seed, round
    )
    for t in range(idx.shape[0]):
        k = int(mask[t, 0].sum())
        if k == 0:
            continue
        sel = torch.from_numpy(idx[t, 0, :k])
        opt.zero_grad()
        loss = per_example_loss(m(x[sel]), y[sel], task).mean()
        loss.backward()
        opt.step()
    return flat_params(m) - global_flat
