"""Data-independent ScatterNet image features (no privacy cost).

A two-layer scattering transform (Bruna & Mallat 2013) with the filter bank of kymatio's
``Scattering2D(J=2, L=8)``, as used by Tramèr & Boneh (2021) for DP learning, written here
from the formulas:

* Morlet wavelets ``ψ_{j,θ} = G(σ_j, θ, ξ_j) − K·G(σ_j, θ, 0)`` with ``σ_j = 0.8·2^j``,
  ``ξ_j = 3π/4 / 2^j`` and ``K`` giving zero mean, where ``G`` is an *anisotropic* Gabor
  function: in the frame rotated by ``θ = πl/L`` its Gaussian envelope has width ``σ``
  along the oscillation and ``σ / s`` across it, slant ``s = 4/L`` (spatially elongated,
  half the angular bandwidth of an isotropic bump, so the 8 orientations overlap less);
* a Gaussian low-pass ``φ`` of width ``0.8·2^J``.

The filters are built in space (periodised on the grid) and used in the Fourier domain.
Each image is reflect-padded from 28 to 36 pixels, then

1. ``S0 = x ⋆ φ`` (1 channel);
2. ``S1 = |x ⋆ ψ_{j,θ}| ⋆ φ`` for ``J = 2`` scales × ``L = 8`` orientations (16 channels);
3. ``S2 = ||x ⋆ ψ_{0,θ1}| ⋆ ψ_{1,θ2}| ⋆ φ`` for ``j1 = 0 < j2 = 1`` (64 channels);

computed at resolution ``2^-j`` after each wavelet of scale ``j`` (Fourier-domain
subsampling), subsampled 4× overall and cropped back to 7 × 7: 81 × 7 × 7 = 3,969
features. They are then normalised *per example* (group normalisation: 27 groups of
3 channels, zero mean and unit variance within each group), so no statistic of any data
set is used: the features of an image depend on that image alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from veil.errors import DataError

__all__ = ["scatter_filters", "scatter_features", "N_FEATURES"]

SCALES, ORIENTS, SIDE, PAD = 2, 8, 28, 4
GRID, STEP = SIDE + 2 * PAD, 2**SCALES
SLANT = 4.0 / ORIENTS
CHANNELS = 1 + SCALES * ORIENTS + ORIENTS * ORIENTS * SCALES * (SCALES - 1) // 2
GROUPS = 27
N_FEATURES = CHANNELS * (SIDE // STEP) ** 2


def _gabor(grid: int, sigma: float, theta: float, xi: float, slant: float) -> torch.Tensor:
    """Periodised spatial Gabor function (origin at index 0), unit integral envelope."""
    c, s = math.cos(theta), math.sin(theta)
    # envelope exp(-zᵀ R diag(1, slant²) Rᵀ z / 2σ²), R the rotation by θ
    a = (c * c + slant**2 * s * s) / (2 * sigma**2)
    b = (1 - slant**2) * c * s / (2 * sigma**2)
    d = (s * s + slant**2 * c * c) / (2 * sigma**2)
    base = torch.arange(grid, dtype=torch.float64)
    out = torch.zeros(grid, grid, dtype=torch.complex128)
    for px in (-2, -1, 0, 1):
        for py in (-2, -1, 0, 1):
            u = (base + px * grid).view(-1, 1)
            v = (base + py * grid).view(1, -1)
            env = torch.exp(-(a * u * u + 2 * b * u * v + d * v * v))
            out += env * torch.exp(1j * xi * (u * c + v * s))
    return out / (2 * math.pi * sigma**2 / slant)


def scatter_filters(
    grid: int = GRID, scales: int = SCALES, orients: int = ORIENTS, slant: float = SLANT
) -> tuple[torch.Tensor, torch.Tensor]:
    """Morlet wavelets ``(scales·orients, grid, grid)`` and a low-pass ``(grid, grid)``.

    Both are given in the frequency domain (real float32: the spatial filters are
    symmetric). Wavelet ``j·orients + l`` has scale ``j`` and orientation ``πl/orients``.
    """
    psi = []
    for j in range(scales):
        sigma, xi = 0.8 * 2**j, 0.75 * math.pi / 2**j
        for o in range(orients):
            th = math.pi * o / orients
            g = _gabor(grid, sigma, th, xi, slant)
            g0 = _gabor(grid, sigma, th, 0.0, slant)
            psi.append(torch.fft.fft2(g - (g.sum() / g0.sum()) * g0).real)
    phi = torch.fft.fft2(_gabor(grid, 0.8 * 2**scales, 0.0, 0.0, 1.0)).real
    return torch.stack(psi).float(), phi.float()


def _low_band(f: torch.Tensor, r: int) -> torch.Tensor:
    """A Fourier-domain filter restricted to the band of a signal subsampled by ``2^r``."""
    n = f.shape[-1]
    m = n >> r
    idx = torch.cat([torch.arange(m // 2), torch.arange(n - (m - m // 2), n)])
    return f[..., idx, :][..., idx]


def _subsample(z: torch.Tensor, k: int) -> torch.Tensor:
    """Fourier-domain subsampling by ``k`` (periodisation ≡ keeping every k-th pixel)."""
    *lead, m, n = z.shape
    return z.reshape(*lead, k, m // k, k, n // k).mean((-4, -2))


def scatter_features(x: np.ndarray, batch: int = 100) -> np.ndarray:
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
    x = x.reshape(-1, 1, SIDE, SIDE)
    psi, phi = scatter_filters()
    fine, coarse = psi[:ORIENTS], psi[ORIENTS:]  # j = 0 and j = 1 wavelets
    phi1 = _low_band(phi, 1)
    out = np.empty((len(x), N_FEATURES), dtype=np.float32)

    ifft = torch.fft.ifft2

    def crop(z: torch.Tensor) -> torch.Tensor:  # (B, C, 9, 9) → (B, C, 49): drop the pad
        return z[..., 1:-1, 1:-1].reshape(z.shape[0], -1, (SIDE // STEP) ** 2)

    for s in range(0, len(x), batch):
        img = torch.nn.functional.pad(torch.from_numpy(x[s : s + batch]), (PAD,) * 4, "reflect")
        b = len(img)
        f = torch.fft.fft2(img)  # (B, 1, 36, 36)
        u0 = torch.fft.fft2(ifft(f * fine).abs())  # |x ⋆ ψ_0,θ| at full resolution
        u1 = torch.fft.fft2(ifft(_subsample(f * coarse, 2)).abs())  # |x ⋆ ψ_1,θ| at 1/2
        u2 = ifft(_subsample(u0.unsqueeze(2) * coarse.view(1, 1, ORIENTS, GRID, GRID), 2))
        u2 = torch.fft.fft2(u2.abs().reshape(b, ORIENTS * ORIENTS, GRID // 2, GRID // 2))
        feats = torch.cat(
            [
                crop(ifft(_subsample(f * phi, STEP)).real),
                crop(ifft(_subsample(u0 * phi, STEP)).real),
                crop(ifft(_subsample(u1 * phi1, STEP // 2)).real),
                crop(ifft(_subsample(u2 * phi1, STEP // 2)).real),
            ],
            dim=1,
        ).view(b, GROUPS, -1)
        var = feats.var(-1, unbiased=False, keepdim=True)
        feats = (feats - feats.mean(-1, keepdim=True)) / (var + 1e-5).sqrt()
        out[s : s + b] = feats.reshape(b, -1).numpy()
    return out
