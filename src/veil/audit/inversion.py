"""Gradient inversion (Geiping et al. 2020, "Inverting Gradients") against what a server sees.

The attacker knows the model and receives an update (one local SGD step on a small batch,
``Δ = −lr · ∇L``). It optimises dummy images so that *their* gradient points the same way:
minimise ``1 − cos(∇L(x̂), −Δ)`` plus a total-variation prior, with Adam and a box
constraint to [0, 1]. Labels are read off the last layer's bias gradient (entries of
present classes are negative, as in iDLG) unless given.

Three views of the same site's batch are attacked (:func:`inversion_experiment`):

1. *single site* — the site's own update, as a server without secure aggregation sees it;
2. *secure sum* — the sum of ``n`` sites' updates, all a SecAgg server learns;
3. *DP* — the site's update clipped to norm ``C`` with Gaussian noise ``σC`` added
   (what leaves a site under local/distributed DP; noise from :class:`SecureRng`).

Reconstructions are matched to the true images (Hungarian assignment on MSE) and scored
with PSNR and SSIM (3x3 uniform window, suited to 8x8 digits).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from veil.crypto.prg import SecureRng
from veil.errors import ConfigError

__all__ = [
    "infer_labels",
    "invert_update",
    "inversion_experiment",
    "match_images",
    "psnr",
    "site_update",
    "ssim",
]


def _grads(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
           y: torch.Tensor, create_graph: bool) -> list[torch.Tensor]:
    out = functional_call(model, params, (x,))
    loss = nn.functional.cross_entropy(out, y)
    return list(torch.autograd.grad(loss, list(params.values()), create_graph=create_graph))


def site_update(model: nn.Module, x: np.ndarray, y: np.ndarray, lr: float = 0.1) -> torch.Tensor:
    """The flat update of one local SGD step on the batch ``(x, y)``: ``−lr · ∇L``."""
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    g = _grads(model, params, torch.as_tensor(x, dtype=torch.float32),
               torch.as_tensor(y, dtype=torch.int64), False)
    return -lr * torch.cat([t.reshape(-1) for t in g]).detach()


def _last_bias_slice(model: nn.Module) -> slice:
    i, last = 0, None
    for _, p in model.named_parameters():
        if p.dim() == 1:
            last = slice(i, i + p.numel())
        i += p.numel()
    if last is None:
        raise ConfigError("label inference needs a model whose last layer has a bias")
    return last


def infer_labels(model: nn.Module, update: torch.Tensor, n_images: int) -> np.ndarray:
    """Guess the batch labels from the last bias gradient (the ``n_images`` most negative).

    Exact for a batch with distinct labels; with repeats it returns distinct guesses.
    """
    g = -update[_last_bias_slice(model)]  # ∝ gradient
    order = torch.argsort(g)
    return order[: min(n_images, len(g))].numpy().astype(np.int64) if n_images <= len(g) else \
        np.resize(order.numpy(), n_images).astype(np.int64)


def _tv(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (
        x[..., :, 1:] - x[..., :, :-1]
    ).abs().mean()


def invert_update(
    model: nn.Module,
    update: torch.Tensor,
    image_shape: tuple[int, ...],
    n_images: int,
    labels: np.ndarray | None = None,
    steps: int = 400,
    lr: float = 0.05,
    tv: float = 1e-3,
    seed: int = 0,
    flatten_input: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruct ``n_images`` inputs whose gradient matches ``update`` in direction.

    Args:
        model: the model the update was computed on (its current parameters).
        update: flat update (``−lr · ∇L`` of the batch, possibly summed or noised).
        image_shape: ``(C, H, W)`` of one image.
        n_images: batch size the attacker assumes.
        labels: known labels, or None to infer them from the update.
        steps, lr, tv: Adam steps, step size, total-variation weight.
        seed: seeds the dummy images.
        flatten_input: feed the model flattened images (for MLPs trained on flat features).

    Returns:
        ``(images, labels)`` with images of shape ``(n_images, *image_shape)`` in [0, 1].

    Raises:
        ConfigError: ``update`` has the wrong size.
    """
    params = {k: v.detach().requires_grad_(True) for k, v in model.named_parameters()}
    d = sum(v.numel() for v in params.values())
    if update.numel() != d:
        raise ConfigError(f"update has {update.numel()} entries, model has {d} parameters")
    lab = infer_labels(model, update, n_images) if labels is None else np.asarray(labels)
    yt = torch.from_numpy(lab.astype(np.int64))
    target = -update.detach().to(torch.float32)
    target = target / target.norm().clamp(min=1e-12)
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.rand((n_images, *image_shape), generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(steps * 0.6), int(steps * 0.85)], 0.2)
    for _ in range(steps):
        opt.zero_grad()
        inp = x.reshape(n_images, -1) if flatten_input else x
        g = torch.cat([t.reshape(-1) for t in _grads(model, params, inp, yt, True)])
        loss = 1.0 - torch.dot(g, target) / g.norm().clamp(min=1e-12) + tv * _tv(x)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
    return x.detach().numpy(), lab


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (capped at 100 for identical images)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 100.0 if mse <= 1e-10 else float(10.0 * np.log10(data_range**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two greyscale images (last two axes), 3x3 uniform window, valid region."""
    x = np.asarray(a, np.float64).reshape(-1, *np.shape(a)[-2:]).mean(0)
    y = np.asarray(b, np.float64).reshape(-1, *np.shape(b)[-2:]).mean(0)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def box(z: np.ndarray) -> np.ndarray:
        h, w = z.shape
        windows = (z[i : h - 2 + i, j : w - 2 + j] for i in range(3) for j in range(3))
        return sum(windows, np.zeros(())) / 9.0

    mx, my = box(x), box(y)
    vx, vy, cxy = box(x * x) - mx**2, box(y * y) - my**2, box(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def match_images(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Order of ``recon`` that best matches ``truth`` (min total MSE, Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    r = recon.reshape(len(recon), -1)
    t = truth.reshape(len(truth), -1)
    cost = ((t[:, None, :] - r[None, :, :]) ** 2).mean(-1)
    _, cols = linear_sum_assignment(cost)
    return cols


def _score(recon: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    order = match_images(recon, truth)
    rec = recon[order]
    p = [psnr(r, t) for r, t in zip(rec, truth)]
    s = [ssim(r, t) for r, t in zip(rec, truth)]
    return {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)), "images": rec}


def inversion_experiment(
    model: nn.Module,
    batches: list[tuple[np.ndarray, np.ndarray]],
    image_shape: tuple[int, ...],
    clip: float = 1.0,
    noise_multiplier: float = 1.0,
    lr: float = 0.1,
    steps: int = 400,
    seed: int = 0,
    flatten_input: bool = False,
) -> dict[str, Any]:
    """Attack site 0's batch through the three views (single, secure sum, DP).

    Args:
        model: the global model the sites start from.
        batches: one ``(x, y)`` batch per site (``x`` as images); site 0 is the victim.
        image_shape: ``(C, H, W)``.
        clip, noise_multiplier: DP view: clip the update to ``clip``, add N(0, (σ·clip)²).
        lr: local learning rate of the sites.
        steps: optimisation steps per attack.
        seed: seeds dummy images and the (reproducible) DP noise stream.
        flatten_input: the model takes flat features.

    Returns:
        JSON-ready dict: ``truth`` images, and per view ``psnr``, ``ssim``, ``images``,
        plus ``noise_psnr`` (PSNR of random uniform images, the chance level) and
        ``sum_average_psnr`` / ``sum_average_ssim``: the average of all images in the sum
        scored against the victim's (what the secure-sum view scores by blending alone).

    Raises:
        ConfigError: no batches.
    """
    if not batches:
        raise ConfigError("need at least one site batch")
    x0, y0 = batches[0]
    b = len(y0)

    def upd(x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        return site_update(model, x.reshape(len(y), -1) if flatten_input else x, y, lr)

    single = upd(x0, y0)
    summed = single + sum((upd(x, y) for x, y in batches[1:]), torch.zeros_like(single))
    scale = min(1.0, clip / max(float(single.norm()), 1e-12))
    rng = SecureRng.from_seed(seed, "audit/inversion/dp-noise")
    noise = torch.from_numpy(rng.normal(single.numel(), std=noise_multiplier * clip))
    noisy = single * scale + noise.to(torch.float32)
    views = {"single_site": single, "secure_sum": summed, "dp": noisy}
    out: dict[str, Any] = {"truth": x0.tolist(), "labels": y0.tolist(), "n_sites": len(batches),
                           "batch_size": b, "clip": clip, "noise_multiplier": noise_multiplier,
                           "views": {}}
    for name, u in views.items():
        rec, _ = invert_update(model, u, image_shape, b, None, steps, seed=seed,
                               flatten_input=flatten_input)
        sc = _score(rec, x0)
        out["views"][name] = {
            "psnr": sc["psnr"],
            "ssim": sc["ssim"],
            "images": sc["images"].tolist(),
        }
    g = np.random.default_rng(seed)
    out["noise_psnr"] = float(np.mean([psnr(g.random(x0[0].shape), t) for t in x0]))
    # the right reference for the secure-sum view: the sum is the gradient of every site's
    # batch at once, so a reconstruction from it is at best a blend of all n·b images; the
    # average of those images, scored against the victim's, is what a blend alone scores
    blend = np.concatenate([np.asarray(x, dtype=np.float64) for x, _ in batches]).mean(0)
    out["sum_average_psnr"] = float(np.mean([psnr(blend, t) for t in x0]))
    out["sum_average_ssim"] = float(np.mean([ssim(blend, t) for t in x0]))
    return out
