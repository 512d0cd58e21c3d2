"""Differential privacy: DP-SGD at a site, client-level DP stages, the privacy ledger.

Public API::

    from veil.privacy import PrivacyConfig, build_privacy
    setup = build_privacy(cfg, plan, model, task, local, seed)
    # setup.trainer (DP-SGD or None), setup.transforms (DP-FedAvg), setup.hooks (ledger)

Every ε comes from dp-accounting (:mod:`veil.privacy.accounting`); see
docs/differential-privacy.md for the guarantees and the threat model.

Names are imported lazily (``veil.federation.config`` imports the config schema from
here, and the runtime pieces import ``veil.federation``).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "PrivacyConfig": "config",
    "SampleLevelConfig": "config",
    "ClientLevelConfig": "config",
    "AdaptiveClipConfig": "config",
    "build_privacy": "setup",
    "PrivacySetup": "setup",
    "PrivacyHook": "setup",
    "FEDERATION": "setup",
    "PrivacyLedger": "ledger",
    "DPSGDTrainer": "dpsgd",
    "gaussian_noise": "dpsgd",
    "poisson_batches": "dpsgd",
    "make_accountant": "accounting",
    "epsilon": "accounting",
    "calibrate_noise": "accounting",
    "dpsgd_round_event": "accounting",
    "sampled": "accounting",
    "sweep": "sweep",
    "write_sweep": "sweep",
    "parse_epsilons": "sweep",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"veil.privacy.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'veil.privacy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
