"""`veil bench utility`: accuracy of DP training on Fashion-MNIST at (ε = 3, δ = 1e-5).

Two settings, both with sample-level DP-SGD (veil's :class:`~veil.privacy.DPSGDTrainer`,
noise calibrated with dp-accounting's PLD accountant, ε reported by the ledger):

* ``central``: one site holding all 60k training images (central DP-SGD).
  Target ≥ 90.0% (Tramèr & Boneh 2021: 89.7% with ScatterNet + linear at ε = 3).
* ``federated``: 10 sites, Dirichlet(α = 0.5) label skew, DP-SGD at every site (each
  site's ε ≤ 3 for its own examples), FedAvg of the 10 updates. Target ≥ 88%.

Features are data-independent (no privacy cost): a ScatterNet-like transform computed in
the Fourier domain — Gabor wavelets at J = 2 scales × L = 8 orientations, modulus, a
second order for j₂ > j₁, Gaussian low-pass and 4x subsampling (81 × 7 × 7 = 3,969
features) — then a per-example group normalisation (27 groups of 3 channels, as in
Tramèr & Boneh). A linear classifier is
trained on them with DP-SGD (momentum; the iterates are post-processing).

``quick=True`` is a smoke test: 3k training / 1k test images, 5 epochs (< 60 s on an
idle core; accuracy far below the targets — with 20x fewer examples the same ε costs far
more noise per example). The full mode uses all 60k / 10k images (feature extraction
alone takes several minutes on one core).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from veil.bench._machine import machine_info

__all__ = ["run", "scatter_features"]


def _filters(m: int, j_scales: int, n_orient: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gabor band-pass filters ``(J*L, m, m)`` and a Gaussian low-pass ``(m, m)``, in frequency."""
    w = torch.fft.fftfreq(m, dtype=torch.float64) * 2 * math.pi
    wy, wx = torch.meshgrid(w, w, indexing="ij")
    psi = []
    for j in range(j_scales):
        s = 0.8 * 2**j
        xi = 0.75 * math.pi / 2**j
        for l in range(n_orient):
            th = math.pi * l / n_orient
            gabor = torch.exp(-((wx - xi * math.cos(th)) ** 2 + (wy - xi * math.sin(th)) ** 2) * s * s / 2)
            # Morlet: subtract the Gaussian envelope so the wavelet has zero mean
            psi.append(gabor - math.exp(-xi * xi * s * s / 2) * torch.exp(-(wx**2 + wy**2) * s * s / 2))
    s = 0.8 * 2**j_scales
    phi = torch.exp(-(wx**2 + wy**2) * s * s / 2)
    return torch.stack(psi).to(torch.complex64), phi.to(torch.complex64)


def scatter_features(x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """ScatterNet-like features of ``(N, 1, 28, 28)`` images → ``(N, 3969)`` float32.

    Data-independent: fixed filters, no statistics of any data set are used.
    """
    j_scales, n_orient, m, step = 2, 8, 32, 4
    psi, phi = _filters(m, j_scales, n_orient)
    second = psi[n_orient:]  # j = 1 (second order: j1 = 0 < j2 = 1)
    out = []
    for s in range(0, len(x), batch):
        img = torch.zeros(len(x[s : s + batch]), m, m)
        img[:, :28, :28] = torch.from_numpy(np.asarray(x[s : s + batch], dtype=np.float32)).reshape(-1, 28, 28)
        f = torch.fft.fft2(img)

        def low(z: torch.Tensor) -> torch.Tensor:
            r = torch.fft.ifft2(z * phi).real[..., :28:step, :28:step]
            return r.reshape(r.shape[0], -1)

        s0 = low(f.unsqueeze(1))
        u1 = torch.fft.ifft2(f.unsqueeze(1) * psi).abs()  # (B, 16, m, m)
        f1 = torch.fft.fft2(u1)
        s1 = low(f1)
        u2 = torch.fft.ifft2(f1[:, :n_orient].unsqueeze(2) * second.unsqueeze(0).unsqueeze(0)).abs()
        s2 = low(torch.fft.fft2(u2.reshape(u2.shape[0], -1, m, m)))
        feats = torch.cat([s0, s1, s2], dim=1).view(-1, 27, 3 * 49)  # 81 channels → 27 groups
        feats = (feats - feats.mean(-1, keepdim=True)) / (feats.std(-1, keepdim=True) + 1e-5)
        out.append(feats.reshape(feats.shape[0], -1).numpy().astype(np.float32))
    return np.concatenate(out)


def _train(
    feats: np.ndarray, y: np.ndarray, xte: np.ndarray, yte: np.ndarray, parts: list[np.ndarray],
    epochs: int, batch: int, lr: float, clip: float, eps: float, delta: float, seed: int,
) -> dict[str, Any]:
    from veil.federation.hooks import RoundInfo, RoundPlan
    from veil.federation.local import LocalConfig, SiteData, flat_params
    from veil.models import LogisticRegression
    from veil.errors import LocalError
    from veil.privacy import PrivacyConfig, build_privacy

    model = LogisticRegression(feats.shape[1], 10)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    data = SiteData(feats, y, parts)
    n_sites = len(parts)
    plan = RoundPlan(epochs, n_sites, float(n_sites), "fixed", data.sizes.copy(), np.ones(n_sites, int))
    cfg = PrivacyConfig(
        enabled=True, target_epsilon=eps, delta=delta, accountant="pld", secure_rng=True,
        sample_level=dict(enabled=True, max_grad_norm=clip, expected_batch_size=batch, epochs=1),
    )
    local = LocalConfig(epochs=1, batch_size=batch, lr=lr, momentum=0.9)
    setup = build_privacy(cfg, plan, model, "classification", local, seed)
    hook, trainer = setup.hook, setup.trainer
    if trainer is None:  # cannot happen: sample level is on
        raise LocalError("build_privacy returned no DP-SGD trainer")
    hook.before_run(plan)
    g = flat_params(model)
    ids = np.arange(n_sites)
    xt, yt = torch.from_numpy(xte), torch.from_numpy(yte)
    acc = 0.0
    for r in range(epochs):
        if hook.before_round(r):
            break
        upd = trainer.train(g, data, ids, seed, r)
        g = g + upd.mean(dim=0)  # FedAvg of equal-weight sites (1 site: plain DP-SGD)
        hook.after_round(RoundInfo(r, ids, ids, ()))
    w = g[: 10 * feats.shape[1]].view(10, -1)
    b = g[10 * feats.shape[1] :]
    acc = float(((xt @ w.t() + b).argmax(1) == yt).float().mean())
    s = hook.summary()
    return {
        "test_accuracy": round(acc, 4),
        "epsilon_spent_max": round(float(s["epsilon_sample_max"]), 4),
        "delta": delta,
        "noise_multiplier": setup.noise["sample_noise_multiplier"],
        "epochs": epochs, "expected_batch": batch, "lr": lr, "momentum": 0.9, "clip": clip,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Fashion-MNIST at ε = 3, δ = 1e-5: central DP-SGD and 10 Dirichlet sites.

    Args:
        quick: 12k-example subset, few epochs (< 60 s); full mode: all 60k examples.

    Raises:
        DataError: Fashion-MNIST is not installed (the message says how to get it).
    """
    from veil.data import load_fashion_mnist, partition

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        ds = load_fashion_mnist()
        n = 3_000 if quick else len(ds.y_train)
        n_test = 1_000 if quick else len(ds.y_test)
        xtr, ytr = ds.x_train[:n], ds.y_train[:n]
        yte = ds.y_test[:n_test]
        tf = time.perf_counter()
        ftr = scatter_features(xtr)
        fte = scatter_features(ds.x_test[:n_test])
        feat_s = time.perf_counter() - tf
        eps, delta = 3.0, 1e-5
        if quick:
            central = _train(ftr, ytr, fte, yte, [np.arange(n)], epochs=5, batch=300,
                             lr=2.0, clip=0.1, eps=eps, delta=delta, seed=0)
            parts = partition(ytr, 10, "dirichlet", alpha=0.5, seed=0)
            fed = _train(ftr, ytr, fte, yte, parts, epochs=5, batch=60,
                         lr=2.0, clip=0.1, eps=eps, delta=delta, seed=0)
        else:
            central = _train(ftr, ytr, fte, yte, [np.arange(n)], epochs=40, batch=4096,
                             lr=4.0, clip=0.1, eps=eps, delta=delta, seed=0)
            parts = partition(ytr, 10, "dirichlet", alpha=0.5, seed=0)
            fed = _train(ftr, ytr, fte, yte, parts, epochs=40, batch=1024,
                         lr=4.0, clip=0.1, eps=eps, delta=delta, seed=0)
        return {
            "benchmark": "utility",
            "quick": quick,
            "dataset": f"fashion_mnist (train {n}, test {n_test})",
            "features": "ScatterNet-like (J=2, L=8, Fourier-domain Gabor), 3969 dims, data-independent",
            "feature_seconds": round(feat_s, 1),
            "central_dpsgd": {**central, "target": 0.90},
            "federated_10_sites_dirichlet_0.5": {**fed, "target": 0.88},
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine_info(),
        }
    finally:
        torch.set_num_threads(threads)
