"""Privacy evaluation: membership inference, one-run ε audits, gradient inversion, audit log.

Attacks use only what a real adversary could see: the released model (membership
inference, canaries) or what the server receives (gradient inversion).
"""

from veil.audit.canary import (
    CanarySet,
    OneRunResult,
    audit_canaries,
    epsilon_lower_bound,
    insert_canaries,
    load_canaries,
    one_run_audit,
    p_value_one_run,
    save_canaries,
    score_canaries,
)
from veil.audit.inversion import inversion_experiment, invert_update, psnr, site_update, ssim
from veil.audit.log import AuditLog, VerifyResult, environment_versions, run_entry
from veil.audit.mia import (
    AttackResult,
    evaluate_attack,
    lira_leave_one_out,
    lira_scores,
    logit_confidence,
    loss_attack,
    roc_curve,
)
from veil.audit.run import audit_run, claimed_epsilon
from veil.audit.shadow import DPParams, TrainParams, random_halves, train_models

__all__ = [
    "AttackResult",
    "AuditLog",
    "CanarySet",
    "DPParams",
    "OneRunResult",
    "TrainParams",
    "VerifyResult",
    "audit_canaries",
    "audit_run",
    "claimed_epsilon",
    "environment_versions",
    "epsilon_lower_bound",
    "evaluate_attack",
    "insert_canaries",
    "inversion_experiment",
    "invert_update",
    "lira_leave_one_out",
    "lira_scores",
    "load_canaries",
    "logit_confidence",
    "loss_attack",
    "one_run_audit",
    "p_value_one_run",
    "psnr",
    "random_halves",
    "roc_curve",
    "run_entry",
    "save_canaries",
    "score_canaries",
    "site_update",
    "ssim",
    "train_models",
]
