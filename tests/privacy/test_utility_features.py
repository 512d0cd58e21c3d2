"""The utility benchmark's ScatterNet-like features: shape, determinism, no data statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from veil.bench._features import N_FEATURES, scatter_features, scatter_filters
from veil.errors import DataError


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def test_shape_and_group_normalisation() -> None:
    f = scatter_features(_images(5))
    assert f.shape == (5, N_FEATURES) == (5, 81 * 7 * 7)
    assert f.dtype == np.float32 and np.isfinite(f).all()
    g = f.reshape(5, 27, 147)  # 27 groups of 3 channels × 7 × 7, normalised per example
    np.testing.assert_allclose(g.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(g.std(-1, ddof=1), 1.0, atol=0.02)


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
    assert psi.shape == (16, 32, 32) and phi.shape == (32, 32)
    assert float(psi[:, 0, 0].abs().max()) < 1e-6  # zero DC: band-pass
    assert abs(complex(phi[0, 0]) - 1) < 1e-6


def test_translation_covariance() -> None:
    x = np.zeros((1, 1, 28, 28), dtype=np.float32)
    x[0, 0, 8:16, 8:16] = 1.0
    y = np.zeros_like(x)
    y[0, 0, 12:20, 12:20] = 1.0  # shifted by one output cell (4 px)
    fx = scatter_features(x).reshape(81, 7, 7)
    fy = scatter_features(y).reshape(81, 7, 7)
    np.testing.assert_allclose(fx[:, 2:4, 2:4], fy[:, 3:5, 3:5], atol=0.05)
    assert torch.tensor(fx).shape == (81, 7, 7)


def test_rejects_wrong_image_size() -> None:
    with pytest.raises(DataError):
        scatter_features(np.zeros((2, 1, 27, 27), dtype=np.float32))
