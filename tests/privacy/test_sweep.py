"""Privacy–utility sweep: one run per ε, table and PNG written."""

from __future__ import annotations

import math

import pytest

from veil.errors import ConfigError
from veil.privacy.sweep import parse_epsilons, sweep


def test_sweep_writes_table_and_png(tmp_path) -> None:
    seen = []

    def run(eps: float):
        seen.append(eps)
        return {"accuracy": 0.9 if math.isinf(eps) else 0.5 + eps / 20, "noise": 1 / eps}

    rows = sweep(run, parse_epsilons("0.5,1,3,inf"), tmp_path)
    assert seen == [0.5, 1.0, 3.0, math.inf]
    assert [r["epsilon"] for r in rows] == seen and rows[-1]["accuracy"] == 0.9
    for f in ("sweep.csv", "sweep.md", "sweep.json", "sweep.png"):
        assert (tmp_path / f).stat().st_size > 0
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "inf" in (tmp_path / "sweep.csv").read_text()


def test_bad_epsilons() -> None:
    with pytest.raises(ConfigError):
        parse_epsilons("1,zero")
    with pytest.raises(ConfigError):
        parse_epsilons("0,1")
