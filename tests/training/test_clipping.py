"""Per-example clipping: ghost/vmap engines agree with Opacus; clipping bounds hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from veil.models import MLP, LogisticRegression, SmallCNN
from veil.training import LocalConfig, PerExampleClipper, SiteData, dpsgd_trainer

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook")


def _opacus_clipped_sum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, c: float):
    gsm = GradSampleModule(model, loss_reduction="sum")
    loss = nn.functional.cross_entropy(gsm(x), y, reduction="sum")
    loss.backward()
    gs = {n: p.grad_sample for n, p in model.named_parameters()}
    norms = torch.stack([g.reshape(len(y), -1).norm(dim=1) for g in gs.values()], 1).norm(dim=1)
    f = (c / (norms + 1e-6)).clamp(max=1.0)
    out = {n: torch.einsum("b,b...->...", f, g) for n, g in gs.items()}
    gsm._close()
    return out, norms


def _stack(model: nn.Module, n: int) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().unsqueeze(0).repeat(n, *[1] * v.dim()) for k, v in model.named_parameters()
    }


MODELS = [
    ("mlp", lambda: MLP(12, 4, (16, 8)), (12,)),
    ("logreg", lambda: LogisticRegression(12, 4), (12,)),
    ("cnn", lambda: SmallCNN(1, 4, 8, width=4), (1, 8, 8)),
    ("cnn28", lambda: SmallCNN(1, 4, 28, width=4), (1, 28, 28)),
]


@pytest.mark.parametrize("name,make,shape", MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("engine", ["auto", "ghost", "vmap"])
def test_clipped_sum_matches_opacus(name, make, shape, engine) -> None:
    torch.manual_seed(0)
    model = make()
    b, c = 24, 0.5
    x = torch.randn(b, *shape)
    y = torch.randint(0, 4, (b,))
    ref, ref_norms = _opacus_clipped_sum(make_copy(model), x, y, c)
    clipper = PerExampleClipper(
        model, [k for k, _ in model.named_parameters()], "classification", engine
    )
    expect = {"auto": "ghost" if name.startswith("cnn") else "chain"}.get(engine, engine)
    assert clipper.engine == expect
    # three sites: site 1 holds the batch; sites 0 and 2 hold other data
    xs = torch.stack([torch.randn(b, *shape), x, torch.randn(b, *shape)])
    ys = torch.stack([torch.randint(0, 4, (b,)), y, torch.randint(0, 4, (b,))])
    mb = torch.ones(3, b)
    sums, norms = clipper.clipped_sum(_stack(model, 3), xs, ys, mb, c)
    torch.testing.assert_close(norms[1], ref_norms, rtol=1e-4, atol=1e-6)
    for k, v in ref.items():
        torch.testing.assert_close(sums[k][1], v, rtol=1e-4, atol=1e-6)
    # single-site path equals the batched one
    one, _ = clipper.clipped_sum(_stack(model, 1), x[None], y[None], torch.ones(1, b), c)
    for k, v in ref.items():
        torch.testing.assert_close(one[k][0], v, rtol=1e-4, atol=1e-6)


def make_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def test_mask_and_clip_bound() -> None:
    """Masked examples contribute nothing; every clipped per-example gradient has norm ≤ C."""
    torch.manual_seed(1)
    model = MLP(6, 3, (5,))
    names = [k for k, _ in model.named_parameters()]
    clipper = PerExampleClipper(model, names, "classification")
    b = 10
    x = torch.randn(2, b, 6) * 5
    y = torch.randint(0, 3, (2, b))
    params = _stack(model, 2)
    for c in (1e-3, 0.1, 10.0):
        for i in range(b):
            mb = torch.zeros(2, b)
            mb[:, i] = 1.0
            sums, norms = clipper.clipped_sum(params, x, y, mb, c)
            total = torch.cat([sums[k].reshape(2, -1) for k in names], 1).norm(dim=1)
            assert torch.all(total <= c * (1 + 1e-5)), (total, c)
            expect = torch.minimum(norms[:, i], torch.full((2,), c))
            torch.testing.assert_close(total, expect, rtol=1e-4, atol=1e-7)
    zero, _ = clipper.clipped_sum(params, x, y, torch.zeros(2, b), 1.0)
    assert all(float(v.abs().max()) == 0.0 for v in zero.values())


def test_dpsgd_step_matches_opacus_without_noise() -> None:
    """q = 1, σ = 0: one DP-SGD step equals Opacus' DPOptimizer step (clipped mean)."""
    from opacus.optimizers import DPOptimizer

    torch.manual_seed(2)
    model = MLP(8, 3, (10,))
    n = 20
    x = torch.randn(n, 8)
    y = torch.randint(0, 3, (n,))
    data = SiteData(x.numpy(), y.numpy(), [np.arange(n)])
    cfg = LocalConfig(epochs=1, batch_size=n, lr=0.5)
    tr = dpsgd_trainer(model, "classification", cfg, noise_multiplier=0.0, max_grad_norm=0.3,
                      expected_batch_size=n, secure_rng=False)
    from veil.training import flat_params

    g0 = flat_params(model)
    upd = tr.train(g0, data, np.array([0]), seed=0, round=0)[0]
    ref = make_copy(model)
    gsm = GradSampleModule(ref)
    opt = DPOptimizer(torch.optim.SGD(ref.parameters(), lr=0.5), noise_multiplier=0.0,
                      max_grad_norm=0.3, expected_batch_size=n)
    opt.zero_grad()
    nn.functional.cross_entropy(gsm(x), y).backward()
    opt.step()
    gsm._close()
    torch.testing.assert_close(upd, flat_params(ref) - g0, rtol=1e-4, atol=1e-6)
