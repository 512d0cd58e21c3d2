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
