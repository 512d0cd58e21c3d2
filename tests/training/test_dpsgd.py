"""DP-SGD trainer: Poisson sampling, noise std (statistical), reproducibility, CSPRNG noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from veil.crypto.prg import SecureRng
from veil.models import MLP
from veil.training import (
    LocalConfig,
    SiteData,
    Trainer,
    dpsgd_trainer,
    flat_params,
    gaussian_noise,
    poisson_batches,
)


def _data(n_sites: int = 3, n: int = 60, f: int = 5) -> SiteData:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_sites * n, f)).astype(np.float32)
    y = rng.integers(0, 3, n_sites * n)
    parts = [np.arange(i * n, (i + 1) * n) for i in range(n_sites)]
    return SiteData(x, y, parts)


def _trainer(**kw) -> Trainer:
    torch.manual_seed(0)
    base = dict(noise_multiplier=1.0, max_grad_norm=0.5, expected_batch_size=15, secure_rng=False)
    base.update(kw)
    return dpsgd_trainer(MLP(5, 3, (8,)), "classification", LocalConfig(lr=0.1), **base)


def test_gaussian_noise_statistics() -> None:
    """N = 200k CSPRNG normals: mean within 5/sqrt(N), std within 5/sqrt(2N), tails sane."""
    z = gaussian_noise(SecureRng.from_seed(1, "noise"), 200_001).numpy()
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.std() - 1) < 5 / math.sqrt(2 * n)
    assert abs(np.mean(np.abs(z) > 1.96) - 0.05) < 5 * math.sqrt(0.05 * 0.95 / n)


def test_poisson_batches_rate() -> None:
    """Batch sizes ~ Binomial(n, q): mean within 5 standard errors over 400 draws."""
    rngs = [SecureRng.from_seed(0, f"s{i}") for i in range(2)]
    sizes, rates, steps = np.array([100, 40]), np.array([0.1, 0.5]), np.array([400, 3])
    idx, mask = poisson_batches(rngs, sizes, rates, steps)
    assert idx.shape[0] == 400 and mask[3:, 1].sum() == 0  # site 1 stops after 3 steps
    b = mask[:, 0].sum(axis=1)
    assert abs(b.mean() - 10) < 5 * math.sqrt(100 * 0.1 * 0.9 / 400)
    used = idx[:, 0][mask[:, 0] > 0]
    assert used.max() < 100 and len(np.unique(used)) == 100  # every example gets picked
    for t in range(10):  # no example twice in one batch
        r = idx[t, 0][mask[t, 0] > 0]
        assert len(np.unique(r)) == len(r)


def test_steps_and_events() -> None:
    tr = _trainer()
    assert tr.schedule.rate(60) == pytest.approx(0.25) and tr.steps(60) == 4
    assert tr.schedule.rate(10) == 1.0 and tr.steps(10) == 1
    ev = tr.round_event(60)
    assert ev.count == 4 and ev.event.sampling_probability == pytest.approx(0.25)


def test_noise_std_in_update() -> None:
    """σ > 0 minus σ = 0 with the same sampling stream isolates the noise:
    update difference = -lr σ C ξ / (q n); std over 2k+ coordinates within 5/sqrt(2N)."""
    data = _data(n_sites=1, n=30)
    g0 = flat_params(MLP(5, 3, (8,)))
    kw = dict(expected_batch_size=30, max_grad_norm=0.5)  # q = 1 → one step
    t1 = dpsgd_trainer(
        MLP(5, 3, (8,)),
        "classification",
        LocalConfig(lr=0.1),
        noise_multiplier=2.0,
        secure_rng=False,
        **kw,
    )
    t0 = dpsgd_trainer(
        MLP(5, 3, (8,)),
        "classification",
        LocalConfig(lr=0.1),
        noise_multiplier=0.0,
        secure_rng=False,
        **kw,
    )
    diffs = []
    for r in range(30):
        u1 = t1.train(g0, data, np.array([0]), seed=5, round=r)
        u0 = t0.train(g0, data, np.array([0]), seed=5, round=r)
        diffs.append((u1 - u0).numpy().ravel())
    d = np.concatenate(diffs)
    expect = 0.1 * 2.0 * 0.5 / 30
    assert abs(d.std() / expect - 1) < 5 / math.sqrt(2 * d.size)
    assert abs(d.mean()) < 5 * expect / math.sqrt(d.size)


def test_reproducible_and_cohort_independent() -> None:
    data = _data()
    g0 = flat_params(MLP(5, 3, (8,)))
    tr = _trainer()
    a = tr.train(g0, data, np.array([0, 1, 2]), seed=3, round=1)
    b = _trainer().train(g0, data, np.array([2, 1]), seed=3, round=1)
    torch.testing.assert_close(a[1], b[1])
    torch.testing.assert_close(a[2], b[0])
    c = _trainer().train(g0, data, np.array([1]), seed=3, round=2)
    assert not torch.allclose(a[1], c[0])


def test_secure_rng_is_fresh() -> None:
    data = _data(n_sites=1)
    g0 = flat_params(MLP(5, 3, (8,)))
    tr = _trainer(secure_rng=True)
    a = tr.train(g0, data, np.array([0]), seed=0, round=0)
    b = tr.train(g0, data, np.array([0]), seed=0, round=0)
    assert not torch.allclose(a, b)


def test_clipping_bounds_update_without_noise() -> None:
    """σ = 0, one step, q = 1: ‖update‖ ≤ lr · C (the mean of clipped gradients)."""
    data = _data(n_sites=2, n=20)
    data.x.mul_(100.0)
    g0 = flat_params(MLP(5, 3, (8,)))
    tr = dpsgd_trainer(MLP(5, 3, (8,)), "classification", LocalConfig(lr=1.0), noise_multiplier=0.0,
                      max_grad_norm=0.01, expected_batch_size=20, secure_rng=False)
    u = tr.train(g0, data, np.array([0, 1]), seed=0, round=0)
    assert torch.all(u.norm(dim=1) <= 0.01 * (1 + 1e-4))
