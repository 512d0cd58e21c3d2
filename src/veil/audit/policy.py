"""A privacy-utility policy: the targets a deployment must meet, checked after a run.

A ``[policy]`` TOML section (or a :class:`Policy`) states

* ``max_epsilon`` at ``delta`` — the privacy budget actually spent (from the ledger);
* ``max_mia_tpr`` — the highest true-positive rate at 0.1 % false-positive rate of any
  membership-inference attack veil's audit ran (loss, LiRA, or the closest-record attack
  on a synthetic table);
* ``min_accuracy`` — the released model's test accuracy (or, for a synthetic table, the
  accuracy of a classifier trained on it and tested on real data).

:func:`check_policy` compares measured values with the targets. A target that was not
measured is *missed*, never silently passed: a run cannot be certified on a number that
does not exist. Two further rules keep the comparison honest:

* ε reported at a δ larger than the policy's δ is not comparable and misses the target
  (ε at a smaller δ is an upper bound of ε at the policy's δ, so it is accepted);
* a TPR at 0.1 % FPR measured with fewer than ``mia_min_nonmembers`` non-members (1,000 by
  default) cannot resolve that FPR and misses the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from veil.errors import ConfigError

__all__ = [
    "Policy",
    "PolicyResult",
    "RunMeasurements",
    "TargetResult",
    "POLICY_FILE",
    "check_policy",
    "enforce_policy",
    "frontier",
    "mark_sweep",
    "policy_from_toml",
    "measurements_from_release",
    "measurements_from_run",
]

#: Written into a run directory by :func:`enforce_policy`.
POLICY_FILE = "policy.json"

_KEYS = {"max_epsilon", "delta", "max_mia_tpr", "min_accuracy", "mia_min_nonmembers"}


def _opt_float(d: Mapping[str, Any], k: str, lo: float, hi: float) -> float | None:
    v = d.get(k)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= float(v) <= hi:
        raise ConfigError(f"must be a number in [{lo}, {hi}], got {v!r}", key=f"policy.{k}")
    return float(v)


@dataclass(frozen=True)
class Policy:
    """Targets a run must meet (``None`` = no target).

    Attributes:
        max_epsilon: largest ε allowed at :attr:`delta`.
        delta: the δ at which ``max_epsilon`` is stated (default 1e-5).
        max_mia_tpr: largest membership-inference TPR at 0.1 % FPR allowed.
        min_accuracy: smallest test accuracy allowed (a fraction in [0, 1]).
        mia_min_nonmembers: fewest non-members for a TPR at 0.1 % FPR to count.
    """

    max_epsilon: float | None = None
    delta: float = 1e-5
    max_mia_tpr: float | None = None
    min_accuracy: float | None = None
    mia_min_nonmembers: int = 1000

    def __post_init__(self) -> None:
        if self.max_epsilon is not None and not self.max_epsilon >= 0:
            raise ConfigError("must be >= 0", key="policy.max_epsilon")
        if not 0 < self.delta < 1:
            raise ConfigError(f"must be in (0, 1), got {self.delta}", key="policy.delta")
        for k in ("max_mia_tpr", "min_accuracy"):
            v = getattr(self, k)
            if v is not None and not 0 <= v <= 1:
                raise ConfigError(f"must be a fraction in [0, 1], got {v}", key=f"policy.{k}")
        if self.mia_min_nonmembers < 1:
            raise ConfigError("must be >= 1", key="policy.mia_min_nonmembers")

    @property
    def empty(self) -> bool:
        """True when the policy sets no target."""
        return self.max_epsilon is None and self.max_mia_tpr is None and self.min_accuracy is None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        """From a TOML ``[policy]`` table.

        Raises:
            ConfigError: unknown keys or values out of range.
        """
        extra = set(d) - _KEYS
        if extra:
            raise ConfigError(f"unknown keys {sorted(extra)}; allowed: {sorted(_KEYS)}",
                              key="policy")
        mn = d.get("mia_min_nonmembers", 1000)
        if isinstance(mn, bool) or not isinstance(mn, int):
            raise ConfigError(f"must be an integer, got {mn!r}", key="policy.mia_min_nonmembers")
        return cls(
            max_epsilon=_opt_float(d, "max_epsilon", 0.0, math.inf),
            delta=_opt_float(d, "delta", 0.0, 1.0) or 1e-5,
            max_mia_tpr=_opt_float(d, "max_mia_tpr", 0.0, 1.0),
            min_accuracy=_opt_float(d, "min_accuracy", 0.0, 1.0),
            mia_min_nonmembers=mn,
        )


@dataclass(frozen=True)
class RunMeasurements:
    """What a run measured (``None`` = not measured).

    Attributes:
        epsilon: ε spent (∞ for a run without DP).
        delta: δ of ``epsilon``.
        mia_tpr: highest membership-inference TPR at 0.1 % FPR over the attacks run.
        mia_attack: which attack gave it.
        mia_nonmembers: non-members in that attack's evaluation.
        accuracy: test accuracy.
    """

    epsilon: float | None = None
    delta: float | None = None
    mia_tpr: float | None = None
    mia_attack: str | None = None
    mia_nonmembers: int | None = None
    accuracy: float | None = None


@dataclass(frozen=True)
class TargetResult:
    """One target checked.

    Attributes:
        name: ``"epsilon"``, ``"mia_tpr"`` or ``"accuracy"``.
        target: the policy's bound.
        measured: the run's value (``None`` = not measured).
        met: whether the target is met.
        detail: one line saying why.
    """

    name: str
    target: float
    measured: float | None
    met: bool
    detail: str


@dataclass(frozen=True)
class PolicyResult:
    """The outcome of :func:`check_policy`.

    Attributes:
        targets: one entry per target the policy sets.
    """

    targets: tuple[TargetResult, ...]

    @property
    def passed(self) -> bool:
        """All targets met (a policy without targets passes)."""
        return all(t.met for t in self.targets)

    @property
    def missed(self) -> list[TargetResult]:
        """The targets not met."""
        return [t for t in self.targets if not t.met]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for records and reports)."""
        return {"passed": self.passed, "releasable": self.passed,
                "targets": [asdict(t) for t in self.targets]}


def _compare(name: str, target: float, value: float, upper: bool, label: str) -> TargetResult:
    """``value`` against an upper (``upper``) or lower bound ``target``."""
    ok = value <= target if upper else value >= target
    sign = ("≤" if ok else ">") if upper else ("≥" if ok else "<")
    return TargetResult(name, target, value, ok, f"{label} = {value:.4g} {sign} {target:g}")


def check_policy(policy: Policy, measured: RunMeasurements) -> PolicyResult:
    """Check a run's measurements against the policy's targets.

    Use :func:`measurements_from_run` (a training run's record and audit) or
    :func:`measurements_from_release` (a synthetic-data evaluation) to build ``measured``.
    """
    out: list[TargetResult] = []
    if policy.max_epsilon is not None:
        eps, delta = measured.epsilon, measured.delta
        if eps is None or (isinstance(eps, float) and math.isnan(eps)):
            out.append(TargetResult("epsilon", policy.max_epsilon, None, False,
                                    "ε was not measured (no ledger entry)"))
        elif delta is None or delta > policy.delta:
            out.append(TargetResult("epsilon", policy.max_epsilon, eps, False,
                                    f"ε reported at δ={delta}, larger than the policy's "
                                    f"δ={policy.delta}: not comparable"))
        else:
            out.append(_compare("epsilon", policy.max_epsilon, eps, True, f"ε at δ={delta:g}"))
    if policy.max_mia_tpr is not None:
        tpr, n = measured.mia_tpr, measured.mia_nonmembers
        if tpr is None and n is None:
            out.append(TargetResult("mia_tpr", policy.max_mia_tpr, None, False,
                                    "no membership-inference audit was run"))
        elif tpr is None:
            out.append(TargetResult("mia_tpr", policy.max_mia_tpr, None, False,
                                    f"{measured.mia_attack} with {n} non-members could not "
                                    "resolve 0.1 % FPR"))
        elif n is None or n < policy.mia_min_nonmembers:
            out.append(TargetResult("mia_tpr", policy.max_mia_tpr, tpr, False,
                                    f"{n} non-members cannot resolve 0.1 % FPR (need "
                                    f"{policy.mia_min_nonmembers})"))
        else:
            out.append(_compare("mia_tpr", policy.max_mia_tpr, tpr, True,
                                f"TPR@0.1%FPR ({measured.mia_attack})"))
    if policy.min_accuracy is not None:
        acc = measured.accuracy
        if acc is None:
            out.append(TargetResult("accuracy", policy.min_accuracy, None, False,
                                    "no test accuracy was recorded"))
        else:
            out.append(_compare("accuracy", policy.min_accuracy, acc, False, "accuracy"))
    return PolicyResult(tuple(out))


def frontier(points: Sequence[RunMeasurements]) -> list[int]:
    """Indices of the privacy-utility frontier of a sweep (ascending ε).

    A run is on the frontier when no other run has ε ≤ its ε and accuracy ≥ its accuracy
    with one of the two strictly better. Runs without ε or accuracy are left out.
    Combined with :func:`check_policy`, a sweep can mark which frontier configurations
    satisfy the policy.
    """
    pts = [(i, p.epsilon, p.accuracy) for i, p in enumerate(points)
           if p.epsilon is not None and p.accuracy is not None]
    out = []
    for i, e, a in pts:
        dominated = any((e2 <= e and a2 >= a) and (e2 < e or a2 > a) for _, e2, a2 in pts)
        if not dominated:
            out.append(i)
    return sorted(out, key=lambda i: (points[i].epsilon, i))


def mark_sweep(rows: Sequence[dict[str, Any]], policy: Policy | None,
               delta: float) -> list[dict[str, Any]]:
    """Add ``frontier`` (and, with a policy, ``meets_policy``) to a ``veil sweep`` table.

    Each row needs ``accuracy`` and ``epsilon_spent`` (or ``epsilon`` = ∞ for the
    non-private run). A sweep runs no membership audit, so a policy with ``max_mia_tpr``
    marks no row as meeting it (the target is not measured).
    """
    def eps_of(r: Mapping[str, Any]) -> float | None:
        v = _num(r.get("epsilon_spent"))
        if v is None and _num(r.get("epsilon")) == math.inf:
            return math.inf
        return v

    ms = [RunMeasurements(epsilon=eps_of(r), delta=delta, accuracy=_num(r.get("accuracy")))
          for r in rows]
    on = set(frontier(ms))
    out = []
    for i, (r, m) in enumerate(zip(rows, ms)):
        row = {**r, "frontier": i in on}
        if policy is not None:
            row["meets_policy"] = check_policy(policy, m).passed
        out.append(row)
    return out


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _attacks(membership: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Flatten ``audit.json``'s membership section into (name, AttackResult dict)."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for name, r in (membership or {}).items():
        if isinstance(r, Mapping) and "tpr_at_fpr" in r:
            found.append((str(r.get("name", name)), r))
        elif isinstance(r, Mapping):
            found += [(str(k), v) for k, v in r.items()
                      if isinstance(v, Mapping) and "tpr_at_fpr" in v]
    return found


def _worst_attack(membership: Mapping[str, Any]) -> tuple[float | None, str | None, int | None]:
    """(highest TPR at 0.1 % FPR, its attack, its non-members); an attack whose TPR is
    ``None`` (its evaluation could not resolve 0.1 % FPR) still reports its size."""
    best: tuple[float | None, str | None, int | None] = (None, None, None)
    for name, r in _attacks(membership):
        tpr = _num((r.get("tpr_at_fpr") or {}).get("0.001"))
        n = int(r.get("n_nonmembers") or 0)
        if tpr is not None and (best[0] is None or tpr > best[0]):
            best = (tpr, name, n)
        elif tpr is None and best[0] is None:
            best = (None, name, n)
    return best


def measurements_from_run(record: Mapping[str, Any],
                          audit: Mapping[str, Any] | None = None) -> RunMeasurements:
    """Read a training run's ``record.json`` (and ``audit.json``) into measurements.

    ε and δ are read as the audit and report read them (:func:`veil.audit.run.claimed_epsilon`);
    a run with privacy disabled has ε = ∞. Accuracy is ``final.test_accuracy`` or the last
    round's. The MIA TPR is the highest over the audit's attacks.
    """
    from veil.audit.run import claimed_epsilon

    eps, delta = claimed_epsilon(dict(record))
    priv_cfg = (record.get("config") or {}).get("privacy") or {}
    if eps is None and record.get("config") is not None and not priv_cfg.get("enabled", False):
        eps = math.inf  # no DP: ε is infinite, which misses any ε target
    acc = _num((record.get("final") or {}).get("test_accuracy"))
    if acc is None:
        for r in reversed(record.get("rounds") or []):
            acc = _num(r.get("test_accuracy"))
            if acc is not None:
                break
    tpr, name, n = _worst_attack((audit or {}).get("membership") or {})
    return RunMeasurements(eps, delta, tpr, name, n, acc)


def measurements_from_release(evaluation: Mapping[str, Any]) -> RunMeasurements:
    """Measurements of a synthetic release from :func:`veil.audit.synth_eval.evaluate_release`."""
    pv = evaluation.get("privacy") or {}
    mem = evaluation.get("membership") or {}
    tpr = _num((mem.get("tpr_at_fpr") or {}).get("0.001"))
    return RunMeasurements(
        epsilon=_num(pv.get("epsilon")),
        delta=_num(pv.get("delta")),
        mia_tpr=tpr,
        mia_attack=mem.get("name"),
        mia_nonmembers=int(mem["n_nonmembers"]) if mem.get("n_nonmembers") else None,
        accuracy=_num((evaluation.get("utility") or {}).get("accuracy_synthetic")),
    )


def policy_from_toml(path: str | Path) -> Policy | None:
    """The ``[policy]`` table of a TOML file (a run config), or ``None`` when it has none.

    Raises:
        ConfigError: unreadable TOML or a bad ``[policy]`` table.
    """
    import tomllib

    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    table = raw.get("policy")
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError("must be a table", key="policy")
    return Policy.from_dict(table)


def enforce_policy(run_dir: str | Path, policy: Policy, run_audit: bool = True,
                   **audit_kwargs: Any) -> PolicyResult:
    """Check a finished training run against ``policy`` and record the verdict.

    Reads ``record.json`` (and ``audit.json``); when the policy has an MIA target and the
    run has no audit yet, runs :func:`veil.audit.run.audit_run` first (``run_audit``;
    ``audit_kwargs`` go to it). Writes ``policy.json`` into the run directory:
    ``{"passed", "releasable", "targets"}``. ``veil train --enforce-policy`` exits non-zero
    when ``releasable`` is false.

    Raises:
        DataError: the run directory or its record cannot be read.
    """
    import json

    from veil.federation.record import read_record, write_json_atomic

    run = Path(run_dir)
    record = read_record(run)
    audit_path = run / "audit.json"
    audit: dict[str, Any] | None = None
    if audit_path.exists():
        audit = json.loads(audit_path.read_text())
    elif policy.max_mia_tpr is not None and run_audit:
        from veil.audit.run import audit_run

        audit = audit_run(run, **audit_kwargs)
    result = check_policy(policy, measurements_from_run(record, audit))
    write_json_atomic(run / POLICY_FILE, {"policy": asdict(policy), **result.to_dict()})
    return result
