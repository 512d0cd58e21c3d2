"""Each site holds its own sample-level ledger; the run's hook reads only what they report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dp_accounting import dp_event as dpe

from veil.errors import ConfigError
from veil.models import MLP
from veil.privacy import PrivacyConfig, RoundInfo, RoundPlan, SiteLedger, build_privacy
from veil.privacy.accounting import epsilon
from veil.training import LocalConfig


def _setup(sizes):
    cfg = PrivacyConfig(enabled=True, target_epsilon=20.0, delta=1e-5,
                        sample_level=dict(enabled=True, noise_multiplier=1.5,
                                          expected_batch_size=20))
    plan = RoundPlan(10, len(sizes), len(sizes), "fixed", np.asarray(sizes), np.ones(len(sizes)))
    return cfg, plan, build_privacy(cfg, plan, MLP(4, 2, (3,)), "classification",
                                    LocalConfig(), 0)


def test_each_site_charges_its_own_ledger() -> None:
    cfg, plan, setup = _setup([200, 50])
    a, b = setup.site_ledgers
    hook = setup.hook
    hook.before_run(plan)
    out = hook.after_round(RoundInfo(0, np.asarray([1]), np.asarray([1]), ()))
    assert a.epsilon() == 0.0 and b.epsilon() > 0
    want = epsilon(dpe.SelfComposedDpEvent(setup.trainer.round_event(50), 1), 1e-5, "rdp")
    assert abs(b.epsilon() - want) <= 1e-9
    assert out["epsilon_sample_max"] == b.epsilon() == hook.epsilon_per_site()[1]
    # a site's ledger survives a checkpoint as JSON
    again = SiteLedger(cfg, setup.trainer.round_event(50), 50)
    again.load_state_dict(json.loads(json.dumps(b.state_dict())))
    assert again.epsilon() == b.epsilon()
    assert "50" not in repr(b)  # the size stays inside the ledger


def test_a_site_vets_delta_against_its_own_size() -> None:
    cfg, plan, setup = _setup([200, 50])
    assert setup.site_ledgers[0].planned(10) < setup.site_ledgers[1].planned(10)
    small = SiteLedger(cfg.model_copy(update={"delta": 0.05}), setup.trainer.round_event(50), 50)
    with pytest.raises(ConfigError, match="delta"):
        small.vet()


def test_hidden_cohorts_release_only_the_public_sample_level_bound() -> None:
    """Client-level DP with unrecorded cohorts: the sites' own ε (how often each took part)
    is not released; the record gets the bound of every site taking part every round."""
    sizes = [200, 50, 120]
    cfg = PrivacyConfig(enabled=True, target_epsilon=50.0, delta=1e-5, accountant="rdp",
                        sample_level=dict(enabled=True, noise_multiplier=1.5,
                                          expected_batch_size=20),
                        client_level=dict(enabled=True, noise_multiplier=1.0))
    assert cfg.hide_cohorts
    plan = RoundPlan(4, 3, 1, "poisson", np.asarray(sizes), np.ones(3))
    setup = build_privacy(cfg, plan, MLP(4, 2, (3,)), "classification", LocalConfig(), 0)
    hook = setup.hook
    hook.before_run(plan)
    for r in range(2):  # only site 1 takes part, twice
        out = hook.after_round(RoundInfo(r, np.asarray([1]), np.asarray([1]), ()))
    worst = max(led.planned(2) for led in setup.site_ledgers)
    assert out["epsilon_sample_max"] == worst
    s = hook.summary()
    assert "epsilon_sample_per_site" not in s and s["epsilon_sample_max"] == worst
    # the bound is an upper bound of every site's own ε, and differs from what they hold
    own = [led.epsilon() for led in setup.site_ledgers]
    assert own[0] == own[2] == 0.0 and 0 < own[1] <= worst
    again = type(hook)(cfg, hook.client_event, None, setup.site_ledgers)
    again.load_state_dict(json.loads(json.dumps(hook.state_dict())))
    again.plan = plan
    assert again.summary()["epsilon_sample_max"] == worst  # survives a checkpoint
