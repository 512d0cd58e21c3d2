"""The vectorised trainer gives every site exactly the update it would get training alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from veil.data import load_diabetes, load_digits, partition
from veil.errors import ConfigError
from veil.models import build_model
from veil.training import (
    LocalConfig,
    SiteData,
    Trainer,
    batch_schedule,
    flat_params,
    train_site_reference,
)

ATOL = 1e-5


def _setup(model_name: str, dataset: str, n_sites: int, scheme: str, alpha: float = 0.5):
    if dataset == "diabetes":
        d = load_diabetes()
        task = "regression"
        parts = partition(np.zeros(len(d.y_train), dtype=np.int64), n_sites, scheme, alpha, seed=1)
        model = build_model(model_name, d.input_shape, 1, hidden=(16, 16))
    else:
        d = load_digits(image=model_name == "cnn")
        task = "classification"
        parts = partition(d.y_train, n_sites, scheme, alpha, seed=1)
        model = build_model(model_name, d.input_shape, 10)
    return d, task, parts, model


def _check_exact(model, task, d, parts, cfg, site_ids, seed=3, rnd=2, **kw) -> Trainer:
    data = SiteData(d.x_train, d.y_train, parts)
    g = flat_params(model)
    g = g + 0.01 * torch.randn(g.shape, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(model, task, cfg, **kw)
    got = trainer.train(g, data, np.asarray(site_ids), seed, rnd)
    assert got.shape == (len(site_ids), g.numel())
    for row, i in enumerate(site_ids):
        x, y = data.site(int(i))
        want = train_site_reference(model, task, cfg, g, x, y, int(i), seed, rnd)
        torch.testing.assert_close(got[row], want, atol=ATOL, rtol=0)
    return trainer


CASES = [
    # model, dataset, sites, partition, config, expect fast path
    ("mlp", "digits", 100, "iid", LocalConfig(1, 32, 0.1), True),  # the benchmark's task
    ("mlp", "digits", 50, "iid", LocalConfig(1, 32, 0.1, momentum=0.9, weight_decay=1e-3), True),
    ("mlp", "digits", 20, "dirichlet", LocalConfig(2, 8, 0.05, 0.9, 1e-3), True),
    ("logreg", "digits", 30, "quantity", LocalConfig(2, 5, 0.1, momentum=0.5), True),
    ("mlp", "diabetes", 12, "quantity", LocalConfig(2, 10, 0.01, weight_decay=1e-2), True),
    ("cnn", "digits", 40, "dirichlet", LocalConfig(1, 16, 0.05, 0.9, 1e-4), False),
]


@pytest.mark.parametrize("model_name,dataset,n_sites,scheme,cfg,fast", CASES)
def test_vectorised_equals_alone(model_name, dataset, n_sites, scheme, cfg, fast):
    d, task, parts, model = _setup(model_name, dataset, n_sites, scheme)
    ids = np.arange(n_sites) if model_name != "cnn" else np.arange(0, n_sites, 5)
    trainer = _check_exact(model, task, d, parts, cfg, ids)
    assert trainer.fast_path is fast


@pytest.mark.parametrize("cfg", [LocalConfig(1, 32, 0.1), LocalConfig(2, 4, 0.05, 0.9, 1e-3)])
def test_generic_path_equals_alone(cfg):
    d, task, parts, model = _setup("mlp", "digits", 25, "dirichlet", alpha=0.3)
    trainer = _check_exact(model, task, d, parts, cfg, np.arange(25), fast=False)
    assert not trainer.fast_path


@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid])
def test_fast_path_other_activations_and_no_bias(act):
    d, task, parts, _ = _setup("mlp", "digits", 15, "quantity")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32, bias=False), act(), nn.Linear(32, 10))
    cfg = LocalConfig(2, 16, 0.2, momentum=0.9)
    trainer = _check_exact(model, task, d, parts, cfg, np.arange(15))
    assert trainer.fast_path


def test_chunks_and_cohort_do_not_change_a_site_update():
    d, task, parts, model = _setup("mlp", "digits", 40, "dirichlet", alpha=0.3)
    data = SiteData(d.x_train, d.y_train, parts)
    g = flat_params(model)
    cfg = LocalConfig(2, 8, 0.05, momentum=0.9)
    full = Trainer(model, task, cfg).train(g, data, np.arange(40), 7, 1)
    some = np.asarray([31, 4, 17])
    alone = Trainer(model, task, cfg, chunk=2).train(g, data, some, 7, 1)
    torch.testing.assert_close(alone, full[some], atol=ATOL, rtol=0)


def test_schedule_is_independent_of_cohort():
    sizes = np.asarray([5, 40, 13, 70])
    ids = np.asarray([3, 9, 11, 20])
    idx, mask = batch_schedule(sizes, ids, 8, 2, seed=5, round=4)
    for j in range(4):
        one_idx, one_mask = batch_schedule(sizes[j : j + 1], ids[j : j + 1], 8, 2, 5, 4)
        per_epoch = -(-sizes[j] // 8)
        got = [idx[t, j][mask[t, j] > 0] for t in range(idx.shape[0])]
        want = [one_idx[t, 0][one_mask[t, 0] > 0] for t in range(one_idx.shape[0])]
        got = [g for g in got if len(g)]
        want = [w for w in want if len(w)]
        assert len(got) == 2 * per_epoch
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
        # every epoch is a permutation of the site's examples
        assert sorted(np.concatenate(got[:per_epoch]).tolist()) == list(range(sizes[j]))


def test_deterministic_and_seeded():
    d, task, parts, model = _setup("mlp", "digits", 20, "iid")
    data = SiteData(d.x_train, d.y_train, parts)
    g = flat_params(model)
    cfg = LocalConfig(1, 4, 0.1)
    tr = Trainer(model, task, cfg)
    a = tr.train(g, data, np.arange(20), 0, 0)
    b = tr.train(g, data, np.arange(20), 0, 0)
    assert torch.equal(a, b)
    assert not torch.allclose(a, tr.train(g, data, np.arange(20), 0, 1))
    assert not torch.allclose(a, tr.train(g, data, np.arange(20), 1, 0))


def test_custom_gradient_source_is_used():
    """A gradient source is a part of the trainer: the loop calls the one it is given."""
    d, task, parts, model = _setup("mlp", "digits", 10, "iid")
    data = SiteData(d.x_train, d.y_train, parts)
    calls = []

    class Zero:
        fast_path = False

        def step_event(self, n):
            return None

        def open(self, sites, batches):
            def grad(params, xb, yb, mb, step, out, scale=1.0):
                calls.append((step, sites.round, tuple(sites.ids)))
                return out.zero_()

            grad.shared_ok = False
            return grad

    tr = Trainer(model, task, LocalConfig(1, 32, 0.1), gradients=Zero())
    assert not tr.fast_path
    out = tr.train(flat_params(model), data, np.arange(10), 0, 3)
    assert torch.count_nonzero(out) == 0
    steps = -(-int(data.sizes.max()) // 32)
    assert [c[:2] for c in calls] == [(t, 3) for t in range(steps)]
    assert calls[0][2] == tuple(range(10))


def test_rejects_wrong_parameter_count_and_bad_config():
    d, task, parts, model = _setup("logreg", "digits", 5, "iid")
    data = SiteData(d.x_train, d.y_train, parts)
    tr = Trainer(model, task, LocalConfig())
    with pytest.raises(ConfigError):
        tr.train(torch.zeros(3), data, np.arange(5), 0, 0)
    with pytest.raises(ConfigError):
        Trainer(model, task, LocalConfig(batch_size=0))
    with pytest.raises(ConfigError):
        Trainer(model, "ranking", LocalConfig())
