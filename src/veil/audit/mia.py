"""Membership inference: ROC metrics, the loss-threshold attack and LiRA.

* Loss attack (Yeom et al. 2018): score = minus the example's loss on the target model.
* LiRA (Carlini et al. 2022): train reference models on random halves of a data pool;
  for each example collect the logit-scaled confidence of its true label,
  ``φ = log p_y − log(1 − p_y)``, from models that trained on it (IN) and did not (OUT).
  *Online*: score = log N(φ_target; μ_in, σ_in²) − log N(φ_target; μ_out, σ_out²).
  *Offline*: only OUT models; score = (φ_target − μ_out) / σ_out (a monotone transform of
  Carlini's one-sided test, without its saturation at very low FPR).
  With few reference models a per-example variance is unreliable, so by default one
  global variance (pooled over examples) is used, as the paper recommends.

Every attack is summarised by AUC and TPR at fixed low FPRs (0.1 %, 1 %), the numbers
that matter for privacy; the ROC is kept on a log-spaced FPR grid for a log-log plot. A
TPR at FPR f is only reported when the non-members resolve it (at least ``1/f`` of them:
with fewer, "FPR ≤ f" means "no false positive at all" and the number is not a TPR at f);
otherwise it is ``None``. Each reported number carries a bootstrap 95 % interval over the
evaluated examples (members and non-members resampled separately, seeded), which
captures the evaluation-set noise of one attack; intervals over training seeds come from
repeating the whole experiment (``veil bench audit``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from veil.errors import ConfigError

__all__ = [
    "AttackResult",
    "FPR_GRID",
    "LOW_FPRS",
    "evaluate_attack",
    "lira_leave_one_out",
    "lira_scores",
    "logit_confidence",
    "loss_attack",
    "model_outputs",
    "resolves",
    "roc_curve",
]

#: FPRs at which the ROC is stored (log-spaced, for log-log plots).
FPR_GRID = np.unique(np.concatenate([np.logspace(-4, 0, 81), [1e-3, 1e-2, 0.1]]))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR at every threshold (higher score = predicted member), from (0,0) to (1,1).

    Raises:
        ConfigError: lengths differ, or only one class is present.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if len(s) != len(y) or y.all() or not y.any():
        raise ConfigError("ROC needs one label per score and both members and non-members")
    s = np.nan_to_num(s, nan=-np.inf)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # end of each tie group
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    return fpr, tpr


@dataclass(frozen=True)
class AttackResult:
    """Summary of one membership-inference attack.

    Attributes:
        name: e.g. ``"loss"``, ``"lira-online"``.
        auc: area under the ROC curve (0.5 = chance).
        tpr_at_fpr: TPR at FPR ≤ 0.001 and ≤ 0.01 (keys ``"0.001"``, ``"0.01"``); ``None``
            where the number of non-members does not resolve that FPR.
        fpr, tpr: the ROC on :data:`FPR_GRID` (step-interpolated).
        n_members, n_nonmembers: evaluation set sizes (the lowest FPR that can be
            resolved is 1 / n_nonmembers).
        advantage: max(TPR − FPR).
        ci: bootstrap 95 % intervals, ``{"auc": [lo, hi], "0.001": [lo, hi] | None, ...}``.
    """

    name: str
    auc: float
    tpr_at_fpr: dict[str, float | None]
    fpr: list[float] = field(repr=False)
    tpr: list[float] = field(repr=False)
    n_members: int = 0
    n_nonmembers: int = 0
    advantage: float = 0.0
    ci: dict[str, list[float] | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "name": self.name,
            "auc": self.auc,
            "tpr_at_fpr": dict(self.tpr_at_fpr),
            "advantage": self.advantage,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "ci": {k: (list(v) if v is not None else None) for k, v in self.ci.items()},
            "roc": {"fpr": list(self.fpr), "tpr": list(self.tpr)},
        }


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Largest TPR reachable with FPR ≤ each value of ``at``."""
    idx = np.searchsorted(fpr, at, side="right") - 1
    return np.maximum.accumulate(tpr)[np.clip(idx, 0, len(tpr) - 1)]


#: FPRs at which TPR is reported.
LOW_FPRS = (1e-3, 1e-2)


def resolves(n_nonmembers: int, fpr: float) -> bool:
    """Whether ``n_nonmembers`` can resolve a TPR at ``fpr`` (at least ``1/fpr`` of them)."""
    return n_nonmembers * fpr >= 1.0 - 1e-9


def _summary(scores: np.ndarray, lab: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    fpr, tpr = roc_curve(scores, lab)
    return float(np.trapezoid(tpr, fpr)), fpr, tpr


def evaluate_attack(
    name: str, scores: np.ndarray, labels: np.ndarray, bootstrap: int = 200, seed: int = 0
) -> AttackResult:
    """AUC, TPR at 0.1 % / 1 % FPR (where resolved), bootstrap intervals and the ROC.

    Args:
        name: attack name.
        scores: membership scores (higher = member).
        labels: true membership.
        bootstrap: resamples for the 95 % intervals (0 = none).
        seed: seed of the resampling.

    Raises:
        ConfigError: see :func:`roc_curve`.
    """
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels, dtype=bool)
    auc, fpr, tpr = _summary(s, lab)
    n_nm = int((~lab).sum())
    ok = [resolves(n_nm, f) for f in LOW_FPRS]
    at = _tpr_at(fpr, tpr, np.array(LOW_FPRS))
    grid_tpr = _tpr_at(fpr, tpr, FPR_GRID)
    ci: dict[str, list[float] | None] = {}
    if bootstrap > 0:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB007]))
        mem, non = np.flatnonzero(lab), np.flatnonzero(~lab)
        rows = []
        for _ in range(bootstrap):
            idx = np.r_[rng.choice(mem, len(mem)), rng.choice(non, len(non))]
            a, f_, t_ = _summary(s[idx], lab[idx])
            rows.append([a, *_tpr_at(f_, t_, np.array(LOW_FPRS))])
        lo, hi = np.percentile(np.asarray(rows), [2.5, 97.5], axis=0)
        ci["auc"] = [float(lo[0]), float(hi[0])]
        for j, f in enumerate(LOW_FPRS):
            ci[f"{f:g}"] = [float(lo[j + 1]), float(hi[j + 1])] if ok[j] else None
    return AttackResult(
        name=name,
        auc=auc,
        tpr_at_fpr={f"{f:g}": (float(v) if good else None) for f, v, good in zip(LOW_FPRS, at, ok)},
        fpr=[float(v) for v in FPR_GRID],
        tpr=[float(v) for v in grid_tpr],
        n_members=int(lab.sum()),
        n_nonmembers=n_nm,
        advantage=float(np.max(tpr - fpr)),
        ci=ci,
    )


def model_outputs(model: nn.Module, x: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Logits of ``model`` on ``x`` (no gradients, eval mode)."""
    model.eval()
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    with torch.no_grad():
        return torch.cat([model(xt[i : i + batch]) for i in range(0, len(xt), batch)]).numpy()


def logit_confidence(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``φ = log p_y − log(1 − p_y)`` computed stably from logits; any leading batch dims."""
    z = np.asarray(logits, dtype=np.float64)
    yi = np.asarray(y, dtype=np.int64)
    zy = np.take_along_axis(z, np.broadcast_to(yi, z.shape[:-1])[..., None], axis=-1)[..., 0]
    others = z.copy()
    np.put_along_axis(others, np.broadcast_to(yi, z.shape[:-1])[..., None], -np.inf, axis=-1)
    mx = others.max(axis=-1, keepdims=True)
    lse = mx[..., 0] + np.log(np.exp(others - mx).sum(axis=-1))
    return zy - lse


def loss_attack(
    model: nn.Module, x: np.ndarray, y: np.ndarray, members: np.ndarray
) -> AttackResult:
    """Loss-threshold attack: lower loss ⇒ member. ``members`` marks true members."""
    logits = torch.from_numpy(model_outputs(model, x))
    loss = nn.functional.cross_entropy(
        logits, torch.from_numpy(np.asarray(y, dtype=np.int64)), reduction="none"
    )
    return evaluate_attack("loss", -loss.double().numpy(), members)


def _norm_logpdf(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd)


def lira_scores(
    phi_target: np.ndarray,
    phi_refs: np.ndarray,
    in_refs: np.ndarray,
    online: bool = True,
    fixed_variance: bool = True,
) -> np.ndarray:
    """LiRA membership scores of each example for one target model.

    Args:
        phi_target: ``(n,)`` φ of each example on the target model.
        phi_refs: ``(k, n)`` φ on each reference model.
        in_refs: ``(k, n)`` booleans: reference model trained on the example.
        online: use IN and OUT models (True) or OUT models only.
        fixed_variance: one pooled variance for all examples (recommended for k < 64).

    Raises:
        ConfigError: shapes disagree, or fewer than 2 OUT (and, online, IN) models.
    """
    phi = np.asarray(phi_refs, dtype=np.float64)
    inm = np.asarray(in_refs, dtype=bool)
    t = np.asarray(phi_target, dtype=np.float64)
    if phi.shape != inm.shape or phi.ndim != 2 or phi.shape[1] != len(t):
        raise ConfigError("phi_refs and in_refs must be (k, n) and phi_target (n,)")
    outm = ~inm
    if outm.sum(0).min() < 2 or (online and inm.sum(0).min() < 2):
        raise ConfigError("LiRA needs at least 2 IN and 2 OUT reference models per example")

    def stats(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cnt = mask.sum(0)
        mu = (phi * mask).sum(0) / cnt
        var = (((phi - mu) ** 2) * mask).sum(0) / np.maximum(cnt - 1, 1)
        if fixed_variance:
            var = np.full_like(var, np.sum(var * (cnt - 1)) / max(np.sum(cnt - 1), 1))
        return mu, np.sqrt(np.maximum(var, 1e-12))

    mu_out, sd_out = stats(outm)
    if not online:
        return (t - mu_out) / sd_out
    mu_in, sd_in = stats(inm)
    return _norm_logpdf(t, mu_in, sd_in) - _norm_logpdf(t, mu_out, sd_out)


def lira_leave_one_out(
    phi: np.ndarray,
    masks: np.ndarray,
    targets: list[int] | np.ndarray,
    online: bool = True,
    fixed_variance: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """LiRA with each of ``targets`` as the target and all other models as references.

    Returns:
        Concatenated ``(scores, labels)`` over the targets (as in Carlini et al.).
    """
    phi = np.asarray(phi)
    masks = np.asarray(masks, dtype=bool)
    all_s, all_l = [], []
    for t in targets:
        ref = np.arange(len(phi)) != t
        all_s.append(lira_scores(phi[t], phi[ref], masks[ref], online, fixed_variance))
        all_l.append(masks[t])
    return np.concatenate(all_s), np.concatenate(all_l)
