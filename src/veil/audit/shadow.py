"""Train many copies of a small model at once (reference models for LiRA).

Each model ``k`` has its own seeded initialisation and its own training subset (a row of
``in_masks``); all models step together through ``torch.func.vmap``. With ``dp`` set,
every model runs DP-SGD as an adversary who knows the training algorithm would:
Poisson sampling at rate ``batch_size / n_k``, per-example clipping to ``clip``, Gaussian
noise ``noise_multiplier * clip`` on the sum, divided by the expected batch size.
The noise here is ML randomness of a *simulated adversary*, so it comes from a seeded
torch generator, not from :class:`veil.crypto.prg.SecureRng`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from veil.errors import ConfigError
from veil.models.params import flat_params

__all__ = ["DPParams", "TrainParams", "random_halves", "train_models", "models_logits"]


@dataclass(frozen=True)
class TrainParams:
    """SGD settings for reference models."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0


@dataclass(frozen=True)
class DPParams:
    """DP-SGD settings (noise multiplier σ and clipping norm C)."""

    noise_multiplier: float
    clip: float = 1.0


def random_halves(n_models: int, n: int, seed: int) -> np.ndarray:
    """``(n_models, n)`` membership masks: each example is in exactly half of the models.

    This is the paired design of Carlini et al.: every example gets ``n_models // 2`` IN
    and as many OUT models, and each model sees about half of the pool.

    Raises:
        ConfigError: fewer than 2 models.
    """
    if n_models < 2:
        raise ConfigError("need at least 2 models for random halves")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4A1F]))
    keys = rng.random((n_models, n))
    ranks = keys.argsort(axis=0).argsort(axis=0)
    return ranks < n_models // 2


def _init_flat(model: nn.Module, seed: int) -> torch.Tensor:
    m = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in m.modules():
            reset = getattr(mod, "reset_parameters", None)
            if callable(reset):
                reset()
    return flat_params(m)


def _unflat(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for name, p in model.named_parameters():
        out[name] = flat[:, i : i + p.numel()].reshape(flat.shape[0], *p.shape)
        i += p.numel()
    return out


def train_models(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    in_masks: np.ndarray,
    params: TrainParams = TrainParams(),
    seed: int = 0,
    dp: DPParams | None = None,
) -> torch.Tensor:
    """Train one copy of ``model`` per row of ``in_masks`` on its selected examples.

    Args:
        model: a small classifier (its parameters are not used; each copy is re-initialised).
        x, y: the data pool; ``y`` integer class labels.
        in_masks: ``(k, n)`` booleans.
        params: SGD settings.
        seed: seeds inits, shuffles, Poisson sampling and (simulated) DP noise.
        dp: DP-SGD settings, or None for ordinary minibatch SGD.

    Returns:
        ``(k, d)`` flat parameters of the trained models.

    Raises:
        ConfigError: shapes disagree or a model has no examples.
    """
    masks = np.asarray(in_masks, dtype=bool)
    k, n = masks.shape
    if n != len(x) or n != len(y) or masks.sum(1).min() < 1:
        raise ConfigError("in_masks must be (k, len(x)) with at least one example per model")
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    flat = torch.stack([_init_flat(model, int(seed) * 1000 + j) for j in range(k)])
    names = [nm for nm, _ in model.named_parameters()]
    p = _unflat(model, flat.clone())
    bufs = {nm: torch.zeros_like(v) for nm, v in p.items()}
    members = [np.nonzero(masks[j])[0] for j in range(k)]
    sizes = np.array([len(mm) for mm in members])

    def loss_one(pr: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, pr, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    per_ex = vmap(vmap(grad(loss_one), in_dims=(None, 0, 0)), in_dims=(0, 0, 0))
    fwd = vmap(lambda pr, xb: functional_call(model, pr, (xb,)))
    steps_per_epoch = int(np.ceil(sizes.max() / params.batch_size))
    for _ in range(params.epochs):
        if dp is None:
            width = min(params.batch_size, int(sizes.max()))
            idx = np.zeros((k, steps_per_epoch * width), dtype=np.int64)
            msk = np.zeros((k, steps_per_epoch * width), dtype=np.float32)
            for j in range(k):
                perm = rng.permutation(members[j])
                idx[j, : len(perm)], msk[j, : len(perm)] = perm, 1.0
        for s in range(steps_per_epoch):
            if dp is None:
                it = torch.from_numpy(idx[:, s * width : (s + 1) * width])
                mb = torch.from_numpy(msk[:, s * width : (s + 1) * width])
                leaves = {nm: v.detach().requires_grad_(True) for nm, v in p.items()}
                out = fwd(leaves, xt[it])
                ls = nn.functional.cross_entropy(
                    out.reshape(-1, out.shape[-1]), yt[it].reshape(-1), reduction="none"
                ).view(k, -1)
                tot = ((ls * mb).sum(1) / mb.sum(1).clamp(min=1.0)).sum()
                g = dict(zip(names, torch.autograd.grad(tot, [leaves[nm] for nm in names])))
            else:
                g = _dp_step(p, per_ex, xt, yt, members, params.batch_size, dp, rng, gen)
            with torch.no_grad():
                for nm in names:
                    gi = g[nm] + params.weight_decay * p[nm] if params.weight_decay else g[nm]
                    if params.momentum:
                        bufs[nm] = params.momentum * bufs[nm] + gi
                        gi = bufs[nm]
                    p[nm] = p[nm] - params.lr * gi
    return torch.cat([p[nm].reshape(k, -1) for nm in names], dim=1).detach()


def _dp_step(
    p: dict[str, torch.Tensor],
    per_ex: object,
    xt: torch.Tensor,
    yt: torch.Tensor,
    members: list[np.ndarray],
    batch_size: int,
    dp: DPParams,
    rng: np.random.Generator,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    k = len(members)
    picks = [mm[rng.random(len(mm)) < batch_size / len(mm)] for mm in members]
    width = max(1, max(len(pk) for pk in picks))
    idx = np.zeros((k, width), dtype=np.int64)
    msk = np.zeros((k, width), dtype=np.float32)
    for j, pk in enumerate(picks):
        idx[j, : len(pk)], msk[j, : len(pk)] = pk, 1.0
    it, mb = torch.from_numpy(idx), torch.from_numpy(msk)
    g = per_ex({nm: v.detach() for nm, v in p.items()}, xt[it], yt[it])  # type: ignore[operator]
    norms = torch.sqrt(sum(v.reshape(k, width, -1).pow(2).sum(-1) for v in g.values()))
    scale = mb * torch.clamp(dp.clip / (norms + 1e-12), max=1.0)
    out = {}
    for nm, v in g.items():
        summed = (v * scale.view(k, width, *([1] * (v.dim() - 2)))).sum(1)
        noise = torch.randn(summed.shape, generator=gen) * dp.noise_multiplier * dp.clip
        out[nm] = (summed + noise) / float(batch_size)
    return out


def models_logits(model: nn.Module, flat: torch.Tensor, x: np.ndarray) -> np.ndarray:
    """Logits of every trained copy on ``x``: ``(k, n, classes)``."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    pr = _unflat(model, flat)
    with torch.no_grad():
        return vmap(lambda q: functional_call(model, q, (xt,)))(pr).numpy()
