"""Differential privacy: calibration, client-level DP assembly, the privacy ledger.

Public API::

    from veil.privacy import PrivacyConfig, build_privacy
    setup = build_privacy(cfg, plan, model, task, local, seed)
    # setup.trainer (DP-SGD or None), setup.transforms (DP-FedAvg), setup.hooks (ledger)

Every ε comes from dp-accounting (:mod:`veil.privacy.accounting`); see
docs/differential-privacy.md for the guarantees and the threat model. DP-SGD itself is
the :mod:`veil.training` trainer with DP parts (:func:`veil.training.dpsgd_trainer`).
This package imports training, aggregation and below, never federation.
"""

from veil.privacy.accounting import (
    calibrate_noise,
    dpsgd_round_event,
    epsilon,
    make_accountant,
    sampled,
)
from veil.privacy.config import (
    AdaptiveClipConfig,
    ClientLevelConfig,
    PrivacyConfig,
    SampleLevelConfig,
)
from veil.privacy.ledger import PrivacyLedger
from veil.privacy.plan import RoundInfo, RoundPlan
from veil.privacy.setup import FEDERATION, PrivacyHook, PrivacySetup, SecureSum, build_privacy
from veil.privacy.site_ledger import SiteLedger
from veil.privacy.sweep import parse_epsilons, sweep, write_sweep
from veil.privacy.tuning import TuningPlan, TuningResult, tune

__all__ = [
    "FEDERATION",
    "AdaptiveClipConfig",
    "ClientLevelConfig",
    "PrivacyConfig",
    "PrivacyHook",
    "PrivacyLedger",
    "PrivacySetup",
    "RoundInfo",
    "RoundPlan",
    "SampleLevelConfig",
    "SecureSum",
    "SiteLedger",
    "TuningPlan",
    "TuningResult",
    "build_privacy",
    "calibrate_noise",
    "dpsgd_round_event",
    "epsilon",
    "make_accountant",
    "parse_epsilons",
    "sampled",
    "sweep",
    "tune",
    "write_sweep",
]
