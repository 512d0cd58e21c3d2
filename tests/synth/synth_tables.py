"""A small correlated table for the synthesis tests (imported by conftest and tests)."""

from __future__ import annotations

import numpy as np


def make_table(n: int, seed: int) -> dict[str, np.ndarray]:
    """x ~ U(0, 10); y = 1 when x > 5 (90 % of the time); c independent of both."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, n)
    y = np.where(rng.random(n) < 0.9, (x > 5).astype(int), rng.integers(0, 2, n))
    c = rng.choice(np.array(["a", "b", "c"]), n)
    return {"x": x, "c": c, "y": y}
