"""The utility benchmark's ScatterNet features: filters, shape, determinism, no data statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from veil.bench._features import GRID, N_FEATURES, scatter_features, scatter_filters
from veil.errors import DataError


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def test_shape_and_group_normalisation() -> None:
    x = _images(5)
    f = scatter_features(x)
    assert f.shape == (5, N_FEATURES) == (5, 81 * 7 * 7)
    assert f.dtype == np.float32 and np.isfinite(f).all()
    g = f.reshape(5, 27, 147)  # 27 groups of 3 channels × 7 × 7, normalised per example
    np.testing.assert_allclose(g.mean(-1), 0.0, atol=1e-4)
    # GroupNorm's ε = 1e-5 on the variance shrinks low-contrast groups: std ≤ 1 ...
    assert float(g.std(-1).max()) <= 1.0 + 1e-4
    # ... and a high-contrast image (variance ≫ ε in every group) gets unit variance
    h = scatter_features(x * 1000).reshape(5, 27, 147)
    np.testing.assert_allclose(h.std(-1), 1.0, atol=1e-3)


def test_deterministic() -> None:
    x = _images(4)
    np.testing.assert_array_equal(scatter_features(x), scatter_features(x.copy()))


def test_features_of_an_image_do_not_depend_on_other_images() -> None:
    x = _images(6)
    alone = scatter_features(x[:1])
    with_others = scatter_features(x, batch=6)[:1]
    other_batch = scatter_features(np.concatenate([x[:1], _images(3, seed=1) * 0.1]), batch=2)[:1]
    np.testing.assert_allclose(alone, with_others, atol=1e-5)
    np.testing.assert_allclose(alone, other_batch, atol=1e-5)


def test_wavelets_have_zero_mean_and_lowpass_unit_dc() -> None:
    psi, phi = scatter_filters()
    assert psi.shape == (16, GRID, GRID) == (16, 36, 36) and phi.shape == (36, 36)
    assert float(psi[:, 0, 0].abs().max()) < 1e-6  # Morlet correction: zero DC, band-pass
    assert abs(float(phi[0, 0]) - 1) < 1e-6


def _spread(psi: torch.Tensor, k: int) -> tuple[float, float, int, int]:
    """Fourier spread of wavelet ``k`` along / across its direction, and its peak cell."""
    w = torch.fft.fftfreq(GRID, dtype=torch.float64) * 2 * math.pi
    wu, wv = torch.meshgrid(w, w, indexing="ij")
    j, o = divmod(k, 8)
    th, xi = math.pi * o / 8, 0.75 * math.pi / 2**j
    p = psi[k].double() ** 2
    p = p / p.sum()
    along = wu * math.cos(th) + wv * math.sin(th) - xi
    across = -wu * math.sin(th) + wv * math.cos(th)
    peak = int(psi[k].argmax())
    return float((p * along**2).sum()), float((p * across**2).sum()), *divmod(peak, GRID)


def test_wavelets_are_anisotropic_and_oriented() -> None:
    """Slant 1/2: half the angular bandwidth of an isotropic bump (variance ratio ≈ 1/4)."""
    psi, _ = scatter_filters()
    iso, _ = scatter_filters(slant=1.0)
    for k in range(8, 16):  # j = 1 (σ = 1.6: no aliasing at the grid edge)
        a, c, pu, pv = _spread(psi, k)
        assert 0.2 < c / a < 0.33, (k, c / a)
        a_iso, c_iso, _, _ = _spread(iso, k)
        assert 0.9 < c_iso / a_iso < 1.2
        # the peak sits at ξ₁ = 3π/8 in direction θ = πl/8, up to one grid cell
        th = math.pi * (k - 8) / 8
        w = 2 * math.pi / GRID
        fu = (pu if pu < GRID // 2 else pu - GRID) * w
        fv = (pv if pv < GRID // 2 else pv - GRID) * w
        assert (
            math.hypot(fu - 0.375 * math.pi * math.cos(th), fv - 0.375 * math.pi * math.sin(th))
            < 1.5 * w
        )


def test_translation_covariance() -> None:
    x = np.zeros((1, 1, 28, 28), dtype=np.float32)
    x[0, 0, 8:16, 8:16] = 1.0
    y = np.zeros_like(x)
    y[0, 0, 12:20, 12:20] = 1.0  # shifted by one output cell (4 px)
    fx = scatter_features(x).reshape(81, 7, 7)
    fy = scatter_features(y).reshape(81, 7, 7)
    np.testing.assert_allclose(fx[:, 2:4, 2:4], fy[:, 3:5, 3:5], atol=0.05)
    assert not np.allclose(fx[:, 2:4, 2:4], fx[:, 3:5, 3:5], atol=0.05)  # it did move


def test_rejects_wrong_image_size() -> None:
    with pytest.raises(DataError):
        scatter_features(np.zeros((2, 1, 27, 27), dtype=np.float32))


def test_dp_channel_norm_estimates_the_statistics_with_the_stated_noise() -> None:
    from veil.bench.utility import DPNormConfig, dp_channel_norm
    from veil.crypto.prg import SecureRng

    rng = np.random.default_rng(0)
    n = 4_000
    true_mean = rng.normal(0, 0.3, 81)
    x = (true_mean[None, :, None] + rng.normal(0, 0.5, (n, 81, 49))).reshape(n, -1)
    x = np.concatenate([x, rng.normal(size=(n, 7))], 1).astype(np.float32)  # + other columns
    parts = [np.arange(0, 1_000), np.arange(1_000, n)]
    cfg = DPNormConfig(noise=8.0, clip_mean=5.0, clip_var=5.0)
    streams = [SecureRng.from_seed(3, f"t{i}") for i in range(2)]
    mean, var = dp_channel_norm(x, parts, cfg, streams)
    # each statistic: Σ clipped + 2 sites × N(0, (8·5)²), over n: std ≈ 40·√2/4000 ≈ 0.014
    assert np.abs(mean - true_mean).max() < 0.07  # 5 std of the noise + sampling error
    assert np.abs(var - 0.25).max() < 0.07
    noise = (
        mean
        - dp_channel_norm(x, parts, DPNormConfig(noise=1e-9, clip_mean=5.0, clip_var=5.0), streams)[
            0
        ]
    )
    assert 0.007 < float(np.std(noise)) < 0.021  # the noise is there, at its stated scale


def test_dp_normalisation_is_charged_before_dpsgd() -> None:
    from veil.bench.utility import DPLinearConfig, DPNormConfig, train_dp_linear

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    cfg = DPLinearConfig(rate=0.5, epochs=2, lr=1.0)
    _, plain = train_dp_linear(x, y, [np.arange(200)], cfg, n_classes=3)
    _, normed = train_dp_linear(
        x, y, [np.arange(200)], cfg, n_classes=3, spent=DPNormConfig().events()
    )
    assert normed["events_before_dpsgd"] == 2
    assert normed["noise_multiplier"] > plain["noise_multiplier"]  # less budget left for SGD
    assert plain["epsilon_spent_max"] <= 3.0 + 1e-6
    assert 2.9 < normed["epsilon_spent_max"] <= 3.0 + 1e-6  # read back from the ledger


def test_dp_normalisation_default_bounds_follow_from_group_normalisation() -> None:
    """The clip bounds are not looked up on data: group normalisation implies them."""
    from veil.bench.utility import DPNormConfig

    cfg = DPNormConfig()
    x = _images(64, seed=3)
    x[:8] = 0.0  # blank images
    x[8:16] = (x[8:16] > 0.97).astype(np.float32)  # sparse dots: extreme channel energy
    f = scatter_features(x).reshape(len(x), 81, 49).astype(np.float64)
    assert np.linalg.norm(f.mean(-1), axis=1).max() <= cfg.clip_mean + 1e-4
    assert np.linalg.norm((f**2).mean(-1), axis=1).max() <= cfg.clip_var + 1e-4
    assert cfg.clip_mean == pytest.approx(9.0) and cfg.clip_var == pytest.approx(3 * 27**0.5)
