"""Data-independent ScatterNet-like image features (no privacy cost).

A two-layer scattering transform in the spirit of Bruna & Mallat (2013), as used by
Tramèr & Boneh (2021) for DP learning: fixed Morlet-like wavelets, complex modulus, a
Gaussian low-pass and subsampling. Everything is computed in the Fourier domain on a
zero-padded 32 × 32 grid:

1. ``S0 = x ⋆ φ`` (1 channel);
2. ``S1 = |x ⋆ ψ_{j,θ}| ⋆ φ`` for ``J = 2`` scales × ``L = 8`` orientations (16 channels);
3. ``S2 = ||x ⋆ ψ_{0,θ1}| ⋆ ψ_{1,θ2}| ⋆ φ`` for ``j1 = 0 < j2 = 1`` (64 channels);

each subsampled 4× to 7 × 7, i.e. 81 × 7 × 7 = 3,969 features. They are then
normalised *per example* (group normalisation: 27 groups of 3 channels, zero mean and
unit variance within each group), so no statistic of any data set is used: the features
of an image depend on that image alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from veil.errors import DataError

__all__ = ["scatter_filters", "scatter_features", "N_FEATURES"]

SCALES, ORIENTS, GRID, STEP, SIDE = 2, 8, 32, 4, 28
CHANNELS = 1 + SCALES * ORIENTS + ORIENTS * ORIENTS * SCALES * (SCALES - 1) // 2
GROUPS = 27
N_FEATURES = CHANNELS * (SIDE // STEP) ** 2


def scatter_filters(
    grid: int = GRID, scales: int = SCALES, orients: int = ORIENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Band-pass wavelets ``(scales·orients, grid, grid)`` and a low-pass ``(grid, grid)``.

    Both are given in the frequency domain (complex64). Wavelet ``(j, θ)`` is a Gabor
    bump of width ``1 / (0.8·2^j)`` centred at frequency ``0.75π / 2^j`` in direction
    ``θ = πl / L``, minus a Gaussian so that it has zero mean (Morlet); the low-pass is
    a Gaussian of width ``1 / (0.8·2^J)``.
    """
    w = torch.fft.fftfreq(grid, dtype=torch.float64) * 2 * math.pi
    wy, wx = torch.meshgrid(w, w, indexing="ij")
    psi = []
    for j in range(scales):
        s = 0.8 * 2**j
        xi = 0.75 * math.pi / 2**j
        env = torch.exp(-(wx**2 + wy**2) * s * s / 2)
        for o in range(orients):
            th = math.pi * o / orients
            dist2 = (wx - xi * math.cos(th)) ** 2 + (wy - xi * math.sin(th)) ** 2
            bump = torch.exp(-dist2 * s * s / 2)
            psi.append(bump - math.exp(-xi * xi * s * s / 2) * env)
    s = 0.8 * 2**scales
    phi = torch.exp(-(wx**2 + wy**2) * s * s / 2)
    return torch.stack(psi).to(torch.complex64), phi.to(torch.complex64)


def scatter_features(x: np.ndarray, batch: int = 500) -> np.ndarray:
    """Group-normalised scattering features of ``(N, 1, 28, 28)`` images → ``(N, 3969)``.

    Args:
        x: images in [0, 1] (any shape with 784 values per image).
        batch: images per vectorised chunk (memory only; results do not depend on it).

    Raises:
        DataError: the images are not 28 × 28.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.size % (SIDE * SIDE) or x.ndim < 2:
        raise DataError(f"expected (N, 1, 28, 28) images, got shape {x.shape}")
    x = x.reshape(-1, SIDE, SIDE)
    psi, phi = scatter_filters()
    second = psi[ORIENTS:].view(1, 1, ORIENTS, GRID, GRID)  # j2 = 1 wavelets
    out = np.empty((len(x), N_FEATURES), dtype=np.float32)

    def low(z: torch.Tensor) -> torch.Tensor:
        r = torch.fft.ifft2(z * phi).real[..., :SIDE:STEP, :SIDE:STEP]
        return r.reshape(r.shape[0], -1)

    for s in range(0, len(x), batch):
        img = torch.zeros(len(x[s : s + batch]), GRID, GRID)
        img[:, :SIDE, :SIDE] = torch.from_numpy(x[s : s + batch])
        f = torch.fft.fft2(img).unsqueeze(1)
        f1 = torch.fft.fft2(torch.fft.ifft2(f * psi).abs())  # (B, 16, grid, grid)
        u2 = torch.fft.ifft2(f1[:, :ORIENTS].unsqueeze(2) * second).abs()  # j1 = 0
        f2 = torch.fft.fft2(u2.reshape(len(img), -1, GRID, GRID))
        feats = torch.cat([low(f), low(f1), low(f2)], dim=1).view(len(img), GROUPS, -1)
        feats = (feats - feats.mean(-1, keepdim=True)) / (feats.std(-1, keepdim=True) + 1e-5)
        out[s : s + len(img)] = feats.reshape(len(img), -1).numpy()
    return out
