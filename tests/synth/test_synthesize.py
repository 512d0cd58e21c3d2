"""DP synthesis with mbi: schema respected, ε from the ledger (dp-accounting), per site."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("mbi", reason="the `synth` extra (mbi) is not installed")

from dp_accounting import dp_event as dpe  # noqa: E402
from dp_accounting.rdp import RdpAccountant  # noqa: E402

from veil.crypto.prg import SecureRng  # noqa: E402
from veil.errors import ConfigError, DataError  # noqa: E402
from veil.synth import SynthSettings, synthesize, synthesize_sites  # noqa: E402
from veil.synth.mechanisms import exponential_select, plan_mst  # noqa: E402


def _settings(**kw: object) -> SynthSettings:
    base = dict(epsilon=1.0, delta=1e-5, mechanism="fixed", cliques="label_pairs", iters=200,
                seed=3, reproducible_noise=True)
    base.update(kw)
    return SynthSettings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def release(real, schema):  # type: ignore[no-untyped-def]
    return synthesize(real, schema, _settings())


def test_synthetic_table_respects_the_schema(release, schema) -> None:  # type: ignore[no-untyped-def]
    t = release.table
    assert set(t) == set(schema.names)
    assert ((t["x"] >= 0) & (t["x"] <= 10)).all()
    assert set(np.unique(t["c"])) <= {"a", "b", "c"}
    assert set(np.unique(t["y"]).tolist()) <= {0, 1}
    for name, size in schema.sizes.items():
        assert release.codes[name].min() >= 0 and release.codes[name].max() < size
    # the noisy count is close to the real count (σ is tens of records here)
    assert abs(len(t["y"]) - 3000) < 300


def test_epsilon_is_the_ledgers_and_meets_the_budget(release) -> None:  # type: ignore[no-untyped-def]
    events = release.ledger.events("dataset")
    assert len(events) == 1
    # recompute independently on a fresh dp-accounting accountant
    eps = RdpAccountant().compose(events[0]).get_epsilon(1e-5)
    assert release.epsilon == pytest.approx(eps)
    assert 0.97 <= release.epsilon <= 1.0  # calibrated to the budget, never over it


def test_dependence_is_kept_and_noise_grows_as_epsilon_shrinks(real, holdout, schema,  # type: ignore[no-untyped-def]
                                                               release) -> None:
    from veil.audit.synth_eval import marginal_errors, utility

    u = utility(real, holdout, release.table, schema, seed=0)
    assert u["accuracy_real"] > 0.85
    assert u["accuracy_synthetic"] > 0.8  # x -> y survives at ε = 1 with 3000 rows
    tiny = synthesize(real, schema, _settings(epsilon=0.02))
    e_big = marginal_errors(real, release.table, schema)["two_way_mean"]
    e_tiny = marginal_errors(real, tiny.table, schema)["two_way_mean"]
    assert e_tiny > e_big  # fixed seeds; 50x less budget is clearly noisier


def test_noise_comes_from_a_fresh_csprng_by_default(real, schema) -> None:  # type: ignore[no-untyped-def]
    s = _settings(reproducible_noise=False, rows=500)
    a, b = synthesize(real, schema, s), synthesize(real, schema, s)
    assert any(not np.array_equal(a.codes[k], b.codes[k]) for k in a.codes)
    r = _settings(rows=500)
    c, d = synthesize(real, schema, r), synthesize(real, schema, r)
    assert all(np.array_equal(c.codes[k], d.codes[k]) for k in c.codes)


def test_mst_selects_the_dependent_pair_and_accounts_selection(real, schema) -> None:  # type: ignore[no-untyped-def]
    rel = synthesize(real, schema, _settings(mechanism="mst", cliques=None, epsilon=5.0))
    assert ["x", "y"] in rel.info["selected_pairs"]
    assert len(rel.info["selected_pairs"]) == 2  # a spanning tree on 3 columns
    assert 4.85 <= rel.epsilon <= 5.0
    ev = rel.ledger.events("dataset")[0]
    sel = [e for e in ev.events
           if isinstance(e, dpe.SelfComposedDpEvent) and isinstance(e.event, dpe.ZCDpEvent)]
    assert len(sel) == 1 and sel[0].count == 2  # two exponential-mechanism selections


@pytest.mark.slow  # mbi recompiles its estimator for every round's new clique set (~1 min)
def test_aim_selects_the_dependent_pair_within_budget(real, schema) -> None:  # type: ignore[no-untyped-def]
    rel = synthesize(real, schema, _settings(mechanism="aim", cliques=None, epsilon=5.0,
                                             rows=500, iters=100))
    pairs = rel.info["selected_pairs"]
    assert len(pairs) == 3 and pairs[0] == ["x", "y"]  # rounds = columns; worst fit first
    assert 4.85 <= rel.epsilon <= 5.0
    ev = rel.ledger.events("dataset")[0]
    sel = [e for e in ev.events
           if isinstance(e, dpe.SelfComposedDpEvent) and isinstance(e.event, dpe.ZCDpEvent)]
    assert len(sel) == 1 and sel[0].count == 3


def test_sensitive_columns_get_a_smaller_attribute_epsilon(real, schema) -> None:  # type: ignore[no-untyped-def]
    """Cliques (x, y) and (c, y); c is sensitive, so (c, y) gets 3x the noise. The record-level
    budget is met either way; c's attribute-level ε drops below x's."""
    plain = synthesize(real, schema, _settings(rows=200))
    strict = synthesize(real, schema, _settings(rows=200, sensitive=("c",),
                                                sensitive_noise_factor=3.0))
    assert strict.epsilon <= 1.0 and plain.epsilon <= 1.0
    pa, sa = plain.attribute_epsilon(), strict.attribute_epsilon()
    assert pa["c"] == pytest.approx(pa["x"])
    assert sa["c"] < 0.5 * sa["x"]
    assert sa["c"] < pa["c"]
    assert set(sa) == {"x", "c", "y"}


def test_per_site_synthesis_charges_each_site(real, holdout, schema) -> None:  # type: ignore[no-untyped-def]
    out = synthesize_sites({"a": real, "b": holdout}, schema,
                           {"a": _settings(epsilon=1.0, rows=100),
                            "b": _settings(epsilon=0.5, rows=100)})
    led = out["a"].ledger
    assert led is out["b"].ledger
    assert {"site:a", "site:b"} <= set(led.entities())
    assert led.epsilon("site:a") <= 1.0 and led.epsilon("site:b") <= 0.5
    assert led.epsilon("site:b") < led.epsilon("site:a")
    with pytest.raises(ConfigError, match="sites"):
        synthesize_sites({"a": real, "z": real}, schema, {"a": _settings()})


def test_bad_input_is_a_typed_error(real, schema) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="cliques"):
        SynthSettings(epsilon=1.0, mechanism="fixed")
    with pytest.raises(ConfigError, match="epsilon"):
        SynthSettings(epsilon=math.inf)
    bad = dict(real)
    bad["c"] = np.array(["zz"] * len(real["y"]))
    with pytest.raises(DataError):
        synthesize(bad, schema, _settings())


def test_exponential_mechanism_frequencies() -> None:
    """P(i) ∝ exp(ε s_i / 2): with ε = 2 and scores 0, 1, 2 → e^0 : e^1 : e^2."""
    rng = SecureRng.from_seed(7, "test/expmech")
    s = np.array([0.0, 1.0, 2.0])
    n = 6000
    counts = np.bincount([exponential_select(s, 2.0, 1.0, rng) for _ in range(n)], minlength=3)
    p = np.exp(s) / np.exp(s).sum()
    # 5 standard errors of a binomial proportion
    assert np.all(np.abs(counts / n - p) < 5 * np.sqrt(p * (1 - p) / n))


def test_mst_plan_spends_at_most_the_budget() -> None:
    plan = plan_mst({"a": 4, "b": 4, "c": 2, "d": 3}, 1.0, 1e-6)
    eps = RdpAccountant().compose(plan.record_event()).get_epsilon(1e-6)
    assert 0.97 <= eps <= 1.0
    assert plan.selections == 3 and plan.select_eps > 0
