"""Issue 13's benchmark targets come from the rows of one run; a missing peer is a False
target with its reason, never a silent pass."""

from __future__ import annotations

from veil.bench.inference import targets


def _rows(concrete: dict | None, spu: dict | None, fhe_err: float = 1e-4) -> list[dict]:
    rows = [{"workload": "w", "backend": "fhe", "supported": True, "latency_s": 0.010,
             "max_abs_err": fhe_err},
            {"workload": "w", "backend": "mpc", "latency_s": 0.002, "input_s": 0.001,
             "reveal_s": 0.001, "max_abs_err": 1e-5, "rounds": 2, "bytes": 10},
            {"workload": "rf", "backend": "fhe", "supported": False, "reason": "forests: mpc"},
            {"workload": "rf", "backend": "mpc", "latency_s": 0.05, "max_abs_err": 0.0,
             "rounds": 14, "bytes": 10}]
    rows += [dict(workload="w", backend="concrete-ml", **concrete)] if concrete else []
    rows += [dict(workload="w", backend="spu", **spu)] if spu else []
    return rows


def test_targets_from_measured_peers() -> None:
    met, src = targets(_rows({"supported": True, "latency_s": 0.05, "max_abs_err": 0.09},
                             {"latency_s": 0.009, "bytes": 100}))
    assert met["fhe_2x_concrete:w"] is True  # 10 ms vs 50 ms at better accuracy
    assert met["best_2x_peers:w"] is True  # mpc 4 ms vs the faster peer, spu 9 ms
    assert "same run" in src["best_2x_peers:w"]
    # slower than half of the faster peer -> missed
    met, _ = targets(_rows({"supported": True, "latency_s": 0.05, "max_abs_err": 0.09},
                           {"latency_s": 0.007, "bytes": 100}))
    assert met["best_2x_peers:w"] is False
    # less accurate than Concrete-ML (beyond the 1e-3 both count as exact) -> missed
    met, _ = targets(_rows({"supported": True, "latency_s": 0.05, "max_abs_err": 1e-6},
                           {"latency_s": 0.009}, fhe_err=5e-3))
    assert met["fhe_2x_concrete:w"] is False


def test_missing_peer_is_false_with_the_reason() -> None:
    met, src = targets(_rows({"supported": False, "reason": "timed out after 300 s"}, None))
    assert met["fhe_2x_concrete:w"] is False and "timed out" in src["fhe_2x_concrete:w"]
    assert met["best_2x_peers:w"] is False and "spu not measured" in src["best_2x_peers:w"]
    assert "fhe_2x_concrete:rf" not in met  # fhe does not support forests: no such target
    assert met["best_2x_peers:rf"] is False  # but veil's better backend (mpc) still has one
