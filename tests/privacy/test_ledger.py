"""Ledger ε equals dp-accounting directly; budget refusal, stop, calibration, config checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dp_accounting import dp_event as dpe
from pydantic import ValidationError

from veil.errors import BudgetExceededError, ConfigError
from veil.privacy import RoundInfo, RoundPlan
from veil.training import LocalConfig
from veil.models import MLP
from veil.privacy import PrivacyConfig, PrivacyLedger, build_privacy, make_accountant
from veil.privacy.accounting import epsilon


def _random_event(rng: np.random.Generator) -> dpe.DpEvent:
    g = dpe.GaussianDpEvent(float(rng.uniform(0.6, 3.0)))
    k = rng.integers(0, 3)
    if k == 0:
        return g
    p = dpe.PoissonSampledDpEvent(float(rng.uniform(0.01, 0.5)), g)
    return p if k == 1 else dpe.SelfComposedDpEvent(p, int(rng.integers(1, 20)))


def _direct(events: list[dpe.DpEvent], delta: float, kind: str) -> float:
    acc = make_accountant(kind)
    acc.compose(dpe.ComposedDpEvent(events))
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize("seed", range(2))
def test_ledger_matches_direct_rdp_random_schedules(seed: int) -> None:
    rng = np.random.default_rng(seed)
    led = PrivacyLedger(delta=1e-5, accountant="rdp")
    pool = [_random_event(rng) for _ in range(4)]  # repeats exercise shared accountants
    spent: dict[str, list[dpe.DpEvent]] = {}
    for _ in range(25):
        who = f"site:{rng.integers(0, 6)}"
        ev = pool[rng.integers(0, len(pool))] if rng.random() < 0.7 else _random_event(rng)
        led.spend(who, ev)
        spent.setdefault(who, []).append(ev)
        led.prune()
    for who, evs in spent.items():
        assert abs(led.epsilon(who) - _direct(evs, 1e-5, "rdp")) <= 1e-6
    # checkpoint round trip replays the same ε
    state = json.loads(json.dumps(led.state_dict()))
    led2 = PrivacyLedger(1e-5, "rdp")
    led2.load_state_dict(state)
    for who in spent:
        assert abs(led2.epsilon(who) - led.epsilon(who)) <= 1e-9


def test_ledger_matches_direct_pld() -> None:
    rng = np.random.default_rng(7)
    led = PrivacyLedger(delta=1e-6, accountant="pld")
    evs = [_random_event(rng) for _ in range(4)]
    for e in evs:
        led.spend("federation", e)
    assert abs(led.epsilon("federation") - _direct(evs, 1e-6, "pld")) <= 1e-6
    extra = _random_event(rng)
    assert abs(led.epsilon_if("federation", extra) - _direct(evs + [extra], 1e-6, "pld")) <= 1e-6
    assert led.events("federation") == evs


def _plan(rounds: int = 10, n_sites: int = 10, cohort: float = 10, sampling: str = "fixed",
          sizes: int = 200) -> RoundPlan:
    return RoundPlan(
        rounds, n_sites, cohort, sampling, np.full(n_sites, sizes), np.ones(n_sites, int)
    )


def _cfg(**kw) -> PrivacyConfig:
    base = dict(enabled=True, target_epsilon=2.0, delta=1e-5)
    base.update(kw)
    return PrivacyConfig(**base)


def test_over_budget_refused_with_actionable_message() -> None:
    cfg = _cfg(client_level=dict(enabled=True, noise_multiplier=4.0, clip_norm=1.0))
    setup = build_privacy(
        cfg, _plan(rounds=50), MLP(4, 2, (3,)), "classification", LocalConfig(), 0
    )
    with pytest.raises(BudgetExceededError) as e:
        setup.hook.before_run(_plan(rounds=50))
    msg = str(e.value)
    assert "client-level" in msg and "run at most" in msg and "noise_multiplier" in msg
    # the suggested number of rounds indeed fits
    r = int(msg.split("run at most ")[1].split()[0])
    assert epsilon(dpe.SelfComposedDpEvent(dpe.GaussianDpEvent(4.0), r), 1e-5, "rdp") <= 2.0
    assert epsilon(dpe.SelfComposedDpEvent(dpe.GaussianDpEvent(4.0), r + 1), 1e-5, "rdp") > 2.0


def test_sample_level_over_budget_refused() -> None:
    cfg = _cfg(sample_level=dict(enabled=True, noise_multiplier=0.3, expected_batch_size=20))
    setup = build_privacy(cfg, _plan(), MLP(4, 2, (3,)), "classification", LocalConfig(), 0)
    with pytest.raises(BudgetExceededError, match="sample-level"):
        setup.hook.before_run(_plan())


def test_stops_cleanly_at_budget() -> None:
    """over_budget='stop': rounds run until the next one would exceed ε, then a reason."""
    cfg = _cfg(over_budget="stop", client_level=dict(enabled=True, noise_multiplier=3.0),
               sample_level=dict(enabled=True, noise_multiplier=3.0, expected_batch_size=50))
    plan = _plan(rounds=1000, cohort=5, sampling="poisson")
    setup = build_privacy(cfg, plan, MLP(4, 2, (3,)), "classification", LocalConfig(), 0)
    hook = setup.hook
    hook.before_run(plan)  # no exception: policy is stop
    ev = setup.mechanism.round_event()
    rng = np.random.default_rng(0)
    done = 0
    for r in range(1000):
        reason = hook.before_round(r)
        if reason:
            break
        cohort = np.flatnonzero(rng.random(10) < 0.5)
        out = hook.after_round(RoundInfo(r, cohort, cohort, (ev,)))
        assert out["epsilon_client"] <= 2.0 + 1e-9 and out["epsilon_sample_max"] <= 2.0 + 1e-9
        done += 1
    assert reason and "budget reached" in reason
    assert 0 < done < 1000
    s = hook.summary()
    assert s["epsilon_client"] <= 2.0 and s["epsilon_sample_max"] <= 2.0
    # the ledger's client ε is the direct composition of the sampled events
    direct = epsilon(dpe.SelfComposedDpEvent(dpe.PoissonSampledDpEvent(0.5, ev), done), 1e-5, "rdp")
    assert abs(s["epsilon_client"] - direct) <= 1e-6


@pytest.mark.parametrize(
    "kind,rounds", [("rdp", 20), ("pld", 2), pytest.param("pld", 20, marks=pytest.mark.slow)]
)
def test_calibration_hits_target(kind: str, rounds: int) -> None:
    cfg = _cfg(accountant=kind, target_epsilon=3.0,
               client_level=dict(enabled=True, clip_norm=1.0),
               sample_level=dict(enabled=True, expected_batch_size=50))
    plan = _plan(rounds=rounds, cohort=3, sampling="poisson")
    setup = build_privacy(cfg, plan, MLP(4, 2, (3,)), "classification", LocalConfig(), 0)
    setup.hook.before_run(plan)  # fits by construction
    for level in ("client", "sample"):
        assert 2.9 <= setup.hook.planned[level] <= 3.0 + 1e-9


def test_adaptive_calibration_includes_count_noise() -> None:
    plan = _plan(rounds=20, n_sites=100, cohort=20, sampling="poisson")
    fixed = build_privacy(
        _cfg(client_level=dict(enabled=True)),
        plan,
        MLP(4, 2, (3,)),
        "classification",
        LocalConfig(),
        0,
    )
    adapt = build_privacy(
        _cfg(client_level=dict(enabled=True, adaptive=dict(count_stddev=5.0))),
        plan,
        MLP(4, 2, (3,)),
        "classification",
        LocalConfig(),
        0,
    )
    # the count costs privacy, so the update noise must be larger to stay within ε
    assert adapt.noise["client_noise_multiplier"] > fixed.noise["client_noise_multiplier"]
    # too little count noise: no update noise can fit
    with pytest.raises(ConfigError, match="count_stddev"):  # the default m/20 = 1 is too small here
        build_privacy(_cfg(client_level=dict(enabled=True, adaptive=dict())), plan,
                      MLP(4, 2, (3,)), "classification", LocalConfig(), 0)


def test_delta_must_be_below_one_over_population() -> None:
    cfg = _cfg(delta=0.2, client_level=dict(enabled=True, noise_multiplier=5.0))
    setup = build_privacy(cfg, _plan(), MLP(4, 2, (3,)), "classification", LocalConfig(), 0)
    with pytest.raises(ConfigError, match="delta"):
        setup.hook.before_run(_plan())


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="extra"):
        PrivacyConfig(enabled=True, epsilon=3.0)
    with pytest.raises(ValidationError, match="neither"):
        PrivacyConfig(enabled=True)
    with pytest.raises(ValidationError, match="finite"):
        PrivacyConfig(target_epsilon=float("inf"))
    with pytest.raises(ValidationError):
        PrivacyConfig(delta=1.5)
    with pytest.raises(ValidationError):
        PrivacyConfig(client_level=dict(adaptive=dict(target_quantile=1.0)))
    c = PrivacyConfig()
    assert not c.enabled and c.secure_rng
    with pytest.raises(ValidationError):
        c.enabled = True  # frozen  # type: ignore[misc]
