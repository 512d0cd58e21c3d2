"""Papernot & Steinke's bound on an accounted search, computed by hand (no dp-accounting
RepeatAndSelect code): the independent check shared by the tuning tests."""

from __future__ import annotations

import math

import numpy as np

from veil.privacy.tuning import TuningPlan

__all__ = ["ORDERS", "search_epsilon_by_hand"]

ORDERS = np.concatenate([np.linspace(1.01, 8, 200), np.arange(8, 257)])


def search_epsilon_by_hand(
    sigma: float, mean: float, shape: float, delta: float, rdp_curve: np.ndarray | None = None
) -> float:
    """Papernot & Steinke 2022, Theorem 2, for a Gaussian trial (RDP λ/2σ²) or a trial with
    the given RDP curve on ``ORDERS``, converted to (ε, δ) by Canonne-Kamath-Steinke's
    Proposition 12; both minimised on the grid. Independent of dp-accounting's
    RepeatAndSelect code."""
    orders = ORDERS
    gauss = orders / (2 * sigma**2) if rdp_curve is None else rdp_curve
    gamma = TuningPlan(mean, shape).gamma
    # ε'(λ) = ε(λ) + (1+η)(1 − 1/λ̂)ε(λ̂) + (1+η) log(1/γ)/λ̂ + log E[K]/(λ − 1)
    tail = np.min((1 + shape) * ((1 - 1 / orders) * gauss + math.log(1 / gamma) / orders))
    search = gauss + tail + math.log(mean) / (orders - 1)
    eps = search + np.log1p(-1 / orders) - (math.log(delta) + np.log(orders)) / (orders - 1)
    return float(eps.min())
