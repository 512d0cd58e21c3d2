"""The recommender: feasibility (threat model, support, accuracy), the latency model, the
cache, and its choice against measured costs."""

from __future__ import annotations

import numpy as np
import pytest

from veil.errors import ConfigError
from veil.securecompute import recommend_measure as rm
from veil.securecompute.recommend import BackendCost, Network, choose


def _costs() -> list[BackendCost]:
    mpc = BackendCost("mpc", True, compute_s=0.010, rounds=20, bytes=50_000,
                      accuracy={"agreement": 1.0})
    fhe = BackendCost("fhe", True, compute_s=0.200, rounds=1, bytes=400_000,
                      accuracy={"agreement": 1.0})
    return [mpc, fhe]


def test_latency_model_and_rtt_crossover() -> None:
    costs = _costs()
    lan = Network(rtt_s=0.0005, bandwidth_bps=1e9)
    rec = choose(costs, network=lan)
    assert rec.choice == "mpc"
    # crossover: 0.010 + 20 r + 5e-5 = 0.200 + r + 4e-4  ->  r = 0.19035 / 19
    r_star = (0.200 + 4e-4 - 0.010 - 5e-5) / 19
    assert choose(costs, network=Network(r_star * 0.99, 1e9)).choice == "mpc"
    assert choose(costs, network=Network(r_star * 1.01, 1e9)).choice == "fhe"
    assert any(f"{r_star * 1e3:.2f} ms" in x for x in rec.reasons)


def test_threat_model_support_and_accuracy_decide_first() -> None:
    costs = _costs()
    assert choose(costs, threat="one-server").choice == "fhe"
    assert choose(costs, threat="three-servers").choice == "mpc"
    unsupported = [costs[0], BackendCost("fhe", False, reason="forests: use mpc")]
    rec = choose(unsupported, threat="one-server")
    assert rec.choice is None and any("forests" in r for r in rec.reasons)
    bad = [BackendCost("mpc", True, compute_s=0.001, rounds=1, accuracy={"agreement": 0.9}),
           costs[1]]
    assert choose(bad).choice == "fhe"
    with pytest.raises(ConfigError):
        choose(costs, threat="nobody")
    rec = choose(costs, latency_budget_s=1e-6)
    assert any("MISSES" in r for r in rec.reasons)
    assert "choice: mpc" in rec.render()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_choice_matches_the_measured_faster_backend_from_the_cache(tmp_path, monkeypatch) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    from veil.models.ir import from_sklearn

    x, y = load_diabetes(return_X_y=True)
    model = from_sklearn(LinearRegression().fit(x, y))
    costs = rm.measure(model, x[:1], x, cache_dir=tmp_path)
    assert {c.backend for c in costs} == {"mpc", "fhe"} and all(c.supported for c in costs)
    mpc = next(c for c in costs if c.backend == "mpc")
    assert "processes" in mpc.measured_on and "TLS" in mpc.measured_on  # not in-process
    assert mpc.phases["measured_total_s"] >= mpc.compute_s  # loopback's network part removed
    assert all(c.accuracy["max_rel_err"] < 1e-2 for c in costs)

    def boom(*a, **k):
        raise AssertionError("re-measured despite the cache")

    monkeypatch.setattr(rm, "measure_mpc", boom)
    monkeypatch.setattr(rm, "measure_fhe", boom)
    cached = rm.measure(model, x[:1], x, cache_dir=tmp_path)
    assert [c.to_dict() for c in cached] == [c.to_dict() for c in costs]
    for net in (Network(0.0, 1e12), Network(0.0006, 2e9), Network(0.05, 1e7)):
        measured = {c.backend: c.compute_s + c.rounds * net.rtt_s + c.bytes / net.bandwidth_bps
                    for c in cached}
        rec = rm.recommend(model, x[:1], x, network=net, cache_dir=tmp_path)
        assert rec.choice == min(measured, key=measured.get)
    # another batch size is another measurement
    assert rm.model_key(model, 1) != rm.model_key(model, 2)


def test_forest_is_routed_to_mpc_with_the_reason(tmp_path) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    from veil.models.ir import from_sklearn

    x, y = load_diabetes(return_X_y=True)
    est = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(x, y)
    model = from_sklearn(est)
    cost = rm.measure_fhe(model, x[:1], x)
    assert not cost.supported and "mpc" in cost.reason
    assert "measured for" in cost.reason  # cites benchmarks/fhe-forest-probe.json
    rec = choose([BackendCost("mpc", True, compute_s=0.05, rounds=10,
                              accuracy={"max_rel_err": 0.0}), cost])
    assert rec.choice == "mpc" and any("measured for" in r for r in rec.reasons)
    assert np.isfinite(rec.rows[0]["latency_s"])


def _measurement_files():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "benchmarks"
    return sorted(root.glob("inference-measurements*.json"))


def test_choice_matches_the_measured_faster_backend_on_the_recorded_suite() -> None:
    """Over the recorded measurements of the whole suite (both backends, one machine, one
    run; mpc as three party processes over mutual TLS, as ``veil bench inference`` runs it):
    on the network they were measured on, the recommender's choice is the backend that was
    measured faster among those meeting the accuracy rule, for every workload; forests go to
    mpc with the (measured) reason."""
    import json

    files = _measurement_files()
    assert files, "benchmarks/inference-measurements.json is the recorded suite (see RESULTS.md)"
    for path in files:
        data = json.loads(path.read_text())
        assert "TLS" in data["mpc_measured_on"] and "process" in data["mpc_measured_on"]
        net = Network(**data["network"])
        by_work: dict[str, dict[str, dict]] = {}
        for row in data["results"]:
            if row["backend"] in ("mpc", "fhe"):
                by_work.setdefault(row["workload"], {})[row["backend"]] = row
        checked = 0
        for name, rows in by_work.items():
            if set(rows) != {"mpc", "fhe"}:
                continue
            costs = [rm.cost_from_row(rows[b], net) for b in ("mpc", "fhe")]
            rec = choose(costs, network=net)  # default accuracy rule: argmax agreement >= 0.99
            ok = {b: r for b, r in rows.items() if r.get("supported", True) and "latency_s" in r
                  and r.get("accuracy", 1.0) >= 0.99}
            want = min(ok, key=lambda b: rm.measured_total(ok[b]))
            assert rec.choice == want, (name, rec.reasons)
            if name.startswith("rf-"):
                assert rec.choice == "mpc" and any("mpc" in r for r in rec.reasons)
            checked += 1
        assert checked >= 10, f"{path.name}: only {checked} workloads with both backends"
