"""From a :class:`PrivacyConfig` to the pieces a run needs: trainer, transforms, ledger hook.

:func:`build_privacy` calibrates noise (dp-accounting), builds the DP-SGD trainer and the
DP-FedAvg transform, and a :class:`PrivacyHook` that

* refuses a planned schedule over budget in ``before_run`` (:class:`BudgetExceededError`
  saying what to change), unless ``over_budget = "stop"``;
* stops the run cleanly in ``before_round`` when the coming round could exceed the budget;
* records every round's DP events in ``after_round`` and reports ``epsilon_client`` and
  ``epsilon_sample_max`` (ε at the configured δ) for the round's record.

Accounting assumptions (also in docs/differential-privacy.md): sample level — every site
is charged for every round it is selected in (and, for planning and calibration, as if
it were selected every round); client level — under add/remove-one-site, Poisson cohorts
amplify with rate ``cohort / n_sites`` and fixed-size cohorts are bounded by Poisson
subsampling with doubled sensitivity (:mod:`veil.privacy.neighbouring`) — unless
``privacy.record_cohorts`` keeps who took part in the record: then no amplification is
claimed (calibration and ledger alike).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dp_accounting import dp_event as dpe
from torch import nn

from veil.aggregation import presets
from veil.aggregation.base import Chain
from veil.aggregation.distributed_dp import DistributedDP, ddg_epsilon, honest_survivors
from veil.aggregation.quantize import Quantize
from veil.errors import BudgetExceededError, ConfigError
from veil.privacy.accounting import calibrate_noise, epsilon, sampled
from veil.privacy.config import PrivacyConfig
from veil.privacy.ledger import PrivacyLedger
from veil.privacy.neighbouring import cohort_rate, fixed_cohort_size
from veil.privacy.plan import RoundInfo, RoundPlan
from veil.privacy.site_ledger import SiteLedger
from veil.training import LocalConfig, Trainer, dpsgd_trainer

__all__ = ["PrivacySetup", "PrivacyHook", "SecureSum", "build_privacy", "FEDERATION"]

FEDERATION = "federation"
_TOL = 1e-9
#: calibrated sample-level σ by (schedule event, rounds, ε, δ, accountant): a
#: pure function of public settings, computed once per process (sweeps, searches)
_SAMPLE_SIGMA: dict[tuple[Any, ...], float] = {}


class PrivacyHook:
    """Follows a run: refuses, stops and reports according to the privacy budget.

    Args:
        cfg: the privacy config (target ε, δ, accountant, over_budget policy).
        client_event: the per-round client-level DP event *before* site sampling, or
            ``None`` without client-level DP.
        trainer: the DP-SGD trainer, or ``None``.
        site_ledgers: each site's own sample-level ledger (index = site id); the hook
            reads the ε they report, never a site's size.
    """

    name = "privacy"

    def __init__(
        self,
        cfg: PrivacyConfig,
        client_event: dpe.DpEvent | None,
        trainer: Trainer | None,
        site_ledgers: Sequence[SiteLedger] = (),
    ) -> None:
        self.cfg = cfg
        self.client_event = client_event
        self.trainer = trainer
        self.site_ledgers = list(site_ledgers)
        self.ledger = PrivacyLedger(cfg.delta, cfg.accountant)
        self.plan: RoundPlan | None = None
        self.planned: dict[str, float] = {}
        self._client_sampled: dpe.DpEvent | None = None
        #: rounds completed (for the public sample-level bound when cohorts are hidden)
        self._rounds_done = 0

    # -- helpers ---------------------------------------------------------------------------
    def _sampled(self, event: dpe.DpEvent) -> dpe.DpEvent:
        p = self._need_plan()
        # recorded cohorts (privacy.record_cohorts): the reader knows who took part, so
        # no subsampling amplification is claimed
        rate = cohort_rate(p.sampling, p.cohort_size, p.n_sites)
        return sampled(event, p.sampling, rate, self.cfg.amplify)

    def _need_plan(self) -> RoundPlan:
        if self.plan is None:
            raise ConfigError("privacy hook used before before_run(plan)")
        return self.plan

    def planned_events(self, rounds: int) -> dict[str, list[dpe.DpEvent]]:
        """The DP events ``rounds`` rounds spend if every site trains in every one.

        ``"client"``: the federation's event (one entry, site sampling included);
        ``"sample"``: each site's own DP-SGD event (one entry per site, in site order).
        An upper bound on what the run spends; call after :meth:`before_run`.
        """
        out: dict[str, list[dpe.DpEvent]] = {}
        if self.client_event is not None:
            out["client"] = [dpe.SelfComposedDpEvent(self._need_client_sampled(), rounds)]
        if self.site_ledgers:
            out["sample"] = [dpe.SelfComposedDpEvent(led.round_event, int(rounds))
                             for led in self.site_ledgers]
        return out

    def _need_client_sampled(self) -> dpe.DpEvent:
        if self._client_sampled is None:
            raise ConfigError("privacy hook used before before_run(plan)")
        return self._client_sampled

    def _planned_epsilons(self, rounds: int) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._client_sampled is not None:
            ev = dpe.SelfComposedDpEvent(self._client_sampled, rounds)
            out["client"] = epsilon(ev, self.cfg.delta, self.cfg.accountant)
        if self.site_ledgers:
            out["sample"] = max(led.planned(rounds) for led in self.site_ledgers)
        return out

    def _max_rounds(self, level: str, rounds: int) -> int:
        lo, hi = 0, rounds  # largest r with planned ε ≤ target (ε grows with r)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if mid and self._planned_epsilons(mid)[level] <= self.cfg.target_epsilon + _TOL:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _sample_bound(self, rounds: int) -> float:
        """Largest sample-level ε any site could have after ``rounds`` rounds.

        Every site charged as if it took part in every round: a function of public
        configuration only, released instead of the sites' own ε when cohorts are hidden
        (their ε would tell how often each site took part).
        """
        seen: dict[int, float] = {}
        for led in self.site_ledgers:
            if id(led.round_event) not in seen:
                seen[id(led.round_event)] = led.planned(rounds) if rounds else 0.0
        return max(seen.values(), default=0.0)

    # -- hook API --------------------------------------------------------------------------
    def before_run(self, plan: RoundPlan) -> None:
        """Check δ against the population and the planned ε against the budget.

        Raises:
            BudgetExceededError: the planned schedule exceeds the target ε (policy
                ``"refuse"``); the message names the level and what to change.
            ConfigError: δ is not below 1 / (number of protected units).
        """
        self.plan = plan
        cfg = self.cfg
        if self.client_event is not None:
            self._client_sampled = self._sampled(self.client_event)
            if cfg.delta >= 1.0 / plan.n_sites:
                raise ConfigError(
                    f"delta={cfg.delta} is not below 1/n_sites={1 / plan.n_sites:.3g}: "
                    "client-level DP with such a delta can reveal a whole site; "
                    "lower privacy.delta",
                    key="privacy.delta",
                )
        for led in self.site_ledgers:  # each site vets δ against its own size
            led.vet()
        self.planned = self._planned_epsilons(plan.rounds)
        over = {k: v for k, v in self.planned.items() if v > cfg.target_epsilon + _TOL}
        if over and cfg.over_budget == "refuse":
            raise BudgetExceededError(self._refusal(over, plan))

    def _refusal(self, over: Mapping[str, float], plan: RoundPlan) -> str:
        cfg = self.cfg
        parts = []
        for level, eps in over.items():
            r = self._max_rounds(level, plan.rounds)
            if level == "client":
                z = getattr(self.client_event, "noise_multiplier", None)
                knob = "privacy.client_level.noise_multiplier"
                more = "sample fewer sites per round (federation.cohort) with Poisson sampling, "
            else:
                z = None
                knob = "privacy.sample_level.noise_multiplier"
                more = "lower privacy.sample_level.expected_batch_size or epochs, "
            zs = f" (now {z:g})" if isinstance(z, float) else ""
            rounds = f"run at most {r} rounds, or " if r else "(even one round is over budget) "
            parts.append(
                f"{level}-level: planned ε={eps:.3f} > target {cfg.target_epsilon:g} at "
                f"δ={cfg.delta:g} over {plan.rounds} rounds. To fit: {rounds}"
                f"raise {knob}{zs} (or leave it unset to calibrate it), or {more}"
                "or raise privacy.target_epsilon; or set privacy.over_budget = 'stop' to stop "
                "when the budget is reached"
            )
        return "privacy budget exceeded — " + "; ".join(parts)

    def before_round(self, round: int) -> str | None:
        """A stop reason if the coming round could push any guarantee over budget."""
        self._need_plan()
        target = self.cfg.target_epsilon + _TOL
        if self._client_sampled is not None:
            nxt = self.ledger.epsilon_if(FEDERATION, self._client_sampled)
            if nxt > target:
                return (
                    "privacy budget reached (client level): "
                    f"ε={self.ledger.epsilon(FEDERATION):.3f} spent, round {round} would bring it "
                    f"to {nxt:.3f} > {self.cfg.target_epsilon:g} at δ={self.cfg.delta:g}"
                )
        for i, led in enumerate(self.site_ledgers):
            nxt = led.next_epsilon()
            if nxt > target:
                return (
                    f"privacy budget reached (sample level, site {i}): round {round} could "
                    f"bring ε to {nxt:.3f} > {self.cfg.target_epsilon:g} "
                    f"at δ={self.cfg.delta:g}"
                )
        return None

    def after_round(self, info: RoundInfo) -> Mapping[str, Any]:
        """Charge the round's events; return ε spent so far (client and sample level)."""
        self._need_plan()
        out: dict[str, Any] = {}
        if self.client_event is not None:
            evs = list(info.dp_events) or [self.client_event]  # an aborted round still counts
            ev = evs[0] if len(evs) == 1 else dpe.ComposedDpEvent(evs)
            self.ledger.spend(FEDERATION, self._sampled(ev))
            out["epsilon_client"] = self.ledger.epsilon(FEDERATION)
        if self.site_ledgers:
            for s in np.asarray(info.cohort, dtype=np.int64):
                self.site_ledgers[int(s)].charge()  # the site's own ledger
            out["epsilon_sample_max"] = (
                self._sample_bound(info.round + 1) if self.cfg.hide_cohorts
                else max(led.epsilon() for led in self.site_ledgers)
            )
        self._rounds_done = info.round + 1
        self.ledger.prune()
        out["delta"] = self.cfg.delta
        return out

    def epsilon_per_site(self) -> dict[int, float]:
        """Sample-level ε(δ) each site reports."""
        return {i: led.epsilon() for i, led in enumerate(self.site_ledgers)}

    def summary(self) -> Mapping[str, Any]:
        """ε spent, the budget and how it was accounted (for the run's record)."""
        cfg = self.cfg
        out: dict[str, Any] = {
            "privacy_target_epsilon": cfg.target_epsilon,
            "privacy_delta": cfg.delta,
            "privacy_accountant": cfg.accountant,
            "privacy_secure_rng": cfg.secure_rng,
            "privacy_planned_epsilon": dict(self.planned),
        }
        if self.client_event is not None:
            out["epsilon_client"] = self.ledger.epsilon(FEDERATION)
            if self.plan is not None:
                from veil.privacy.neighbouring import basis

                # relation and amplification; with record_cohorts the record lists who
                # took part and the ledger charged every round without amplification
                out["privacy_accounting"] = basis(
                    self.plan.sampling, self.plan.cohort_size, self.plan.n_sites,
                    secret_cohort=cfg.secure_rng, cohort_recorded=cfg.record_cohorts,
                )
        if self.site_ledgers and self.plan is not None and cfg.hide_cohorts:
            # the sites' own ε would say how often each took part: the public bound instead
            out["epsilon_sample_max"] = self._sample_bound(self._rounds_done)
            out["epsilon_sample_bound"] = "every site charged for every completed round"
        elif self.site_ledgers and self.plan is not None:
            per = self.epsilon_per_site()
            out["epsilon_sample_max"] = max(per.values(), default=0.0)
            out["epsilon_sample_per_site"] = {str(k): v for k, v in per.items()}
        out["private"] = cfg.private
        if cfg.debug_unnoised_statistics:
            out["not_private_reason"] = (
                "privacy.debug_unnoised_statistics = true: the record holds un-noised "
                "per-round statistics of the private updates; the ε above is not a valid claim"
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        """The ledger's events (JSON)."""
        return {"ledger": self.ledger.state_dict(), "rounds_done": self._rounds_done}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replay the ledger from a checkpoint."""
        self.ledger = PrivacyLedger(self.cfg.delta, self.cfg.accountant)
        if "ledger" in state:
            self.ledger.load_state_dict(state["ledger"])
        self._rounds_done = int(state.get("rounds_done", 0))


@dataclass(frozen=True)
class SecureSum:
    """The secure summation a run uses: its ring and the quantiser's range.

    Attributes:
        bits: ring width b of the summation protocol.
        quantize_range: per-coordinate clip of the quantiser.
        expected_dropout: dropout rate distributed noise is sized for.
        corrupt_fraction: sites that may collude with the server; their noise is not
            counted by distributed DP.
    """

    bits: int
    quantize_range: float
    expected_dropout: float = 0.0
    corrupt_fraction: float = 0.0


@dataclass
class PrivacySetup:
    """What :func:`build_privacy` hands the runtime.

    Attributes:
        trainer: the DP-SGD trainer (use it instead of the plain one), or ``None``.
        chain: the whole site-side chain of client-level DP (it replaces the mean stage;
            with distributed DP it ends in the ring of the secure sum), or ``None``.
        hooks: the ledger hook (add it to the run's hooks).
        noise: the noise multipliers in use (calibrated or configured), for the record.
    """

    trainer: Trainer | None
    chain: Chain | None
    hooks: tuple[PrivacyHook, ...]
    noise: dict[str, Any] = field(default_factory=dict)
    #: each site's own sample-level ledger (index = site id), for the sites to hold
    site_ledgers: tuple[SiteLedger, ...] = ()

    @property
    def hook(self) -> PrivacyHook:
        """The ledger hook."""
        return self.hooks[0]

    @property
    def mechanism(self) -> Any:
        """The client-level DP stage of :attr:`chain` (``None`` without one)."""
        if self.chain is None:
            return None
        return next(t for t in self.chain.stages if getattr(t, "dp", "") == "mechanism")


def build_privacy(
    cfg: PrivacyConfig,
    plan: RoundPlan,
    model: nn.Module,
    task: str,
    local: LocalConfig,
    seed: int,
    engine: str = "auto",
    secure_sum: SecureSum | None = None,
) -> PrivacySetup:
    """Calibrate noise and build the DP trainer, the client-level chain and the ledger hook.

    Args:
        cfg: privacy settings (must be enabled).
        plan: the run's plan (rounds, sites, cohort, sampling, site sizes).
        model: the architecture.
        task: ``"classification"`` or ``"regression"``.
        local: local training settings (lr, momentum, weight decay, epochs).
        seed: run seed (used for noise only when ``cfg.secure_rng`` is false).
        engine: per-example clipping engine for DP-SGD.
        secure_sum: the run's secure summation (needed by
            ``client_level.mechanism = "distributed"``).

    Raises:
        ConfigError: privacy disabled, or no noise reaches the target.
    """
    del seed  # the trainer receives the run seed per call; kept for the runtime's signature
    if not cfg.enabled:
        raise ConfigError("privacy is not enabled", key="privacy.enabled")
    noise: dict[str, Any] = {}
    trainer: Trainer | None = None
    if cfg.sample_on:
        trainer = _build_trainer(cfg, plan, model, task, local, engine)
        sig = trainer.gradients.noise_multiplier  # type: ignore[attr-defined]
        noise["sample_noise_multiplier"] = dict(sig) if isinstance(sig, Mapping) else sig
    chain: Chain | None = None
    client_event: dpe.DpEvent | None = None
    if cfg.client_on and cfg.client_level.mechanism == "distributed":
        dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
        chain, client_event = _build_distributed(cfg, plan, dim, secure_sum)
        ddp = chain.stages[-1]
        noise["client_noise_multiplier"] = ddp.noise_multiplier
        noise["client_mechanism"] = "distributed discrete Gaussian"
    elif cfg.client_on:
        chain = _build_client_chain(cfg, plan)
        t = chain.stages[0]
        client_event = t.round_event()
        noise["client_noise_multiplier"] = t.noise_multiplier
    ledgers: list[SiteLedger] = []
    if trainer is not None:
        events: dict[int, dpe.DpEvent] = {}
        for n in (int(v) for v in plan.site_sizes):
            if n not in events:
                events[n] = trainer.round_event(n)  # type: ignore[assignment]
            ledgers.append(SiteLedger(cfg, events[n], n))
    hook = PrivacyHook(cfg, client_event, trainer, ledgers)
    return PrivacySetup(trainer, chain, (hook,), noise, tuple(ledgers))


def _build_distributed(
    cfg: PrivacyConfig, plan: RoundPlan, dim: int, secure: SecureSum | None
) -> tuple[Chain, dpe.DpEvent]:
    """The distributed-DP preset, calibrated: clip, fixed-denominator mean, quantise, noise.

    The per-round event is the zCDP bound of the distributed discrete Gaussian for the
    expected number of survivors; each round then charges the event computed for the
    survivors actually in the sum (fewer survivors: less noise, a larger charge). The same
    chain and events serve SecAgg+ and CKKS: both return the exact integer sum of the
    noised rows (CKKS rounds its decrypted sum, :mod:`veil.aggregation.ckks_sum`).
    """
    cl = cfg.client_level
    if secure is None:
        raise ConfigError(
            "distributed DP needs secure aggregation: set aggregation.summation = 'secagg' "
            "or 'ckks' (or privacy.client_level.mechanism = 'central')",
            key="privacy.client_level.mechanism",
        )
    if plan.sampling != "fixed":
        raise ConfigError(
            "distributed DP is accounted for fixed-size cohorts; set federation.sampling = 'fixed'",
            key="privacy.client_level.mechanism",
        )
    n = fixed_cohort_size(plan.cohort_size)
    # noise counted only from honest survivors: expected survivors minus tolerated colluders
    m = honest_survivors(n, secure.expected_dropout, secure.corrupt_fraction)

    def make(z: float, margin: float) -> Chain:
        return presets.distributed_dp(
            cl.clip_norm, z, n, dim, secure.bits, secure.quantize_range,
            secure.expected_dropout, margin, secure.corrupt_fraction,
        )

    def round_event(noise: Any) -> dpe.DpEvent:
        sigma, delta2 = noise.site_sigma(n, dim)
        eps = ddg_epsilon(delta2, sigma, m, dim)
        return dpe.ZCDpEvent(eps**2 / 2) if math.isfinite(eps) else dpe.NonPrivateDpEvent()

    def calibrated(margin: float) -> float:
        z = cl.noise_multiplier
        if z is None:
            z = calibrate_noise(
                lambda v: dpe.SelfComposedDpEvent(
                    # charged as the ledger charges it: the cohort scheme under add/remove
                    sampled(
                        round_event(DistributedDP.after(_quantizer(margin), n, cl.clip_norm, v,
                                                        secure.expected_dropout,
                                                        secure.corrupt_fraction)),
                        plan.sampling, n / plan.n_sites, cfg.amplify,
                    ),
                    plan.rounds,
                ),
                cfg.target_epsilon,
                cfg.delta,
                cfg.accountant,
                "privacy.client_level.noise_multiplier",
            )
        if not (math.isfinite(z) and z > 0):
            raise ConfigError(
                "noise multiplier must be positive and finite",
                key="privacy.client_level.noise_multiplier",
            )
        return float(z)

    def _quantizer(margin: float) -> Quantize:
        return Quantize(secure.quantize_range, secure.bits, margin, cohort_bound=n)

    # The summed noise needs head-room in the ring: the preset widens the quantiser's
    # margin until it fits; calibrate again for the new scale until z is stable.
    margin = 2.0
    for _ in range(40):
        z = calibrated(margin)
        chain = make(z, margin)
        q = chain.stages[2]
        if q.margin == margin:
            return chain, round_event(chain.stages[-1])
        margin = q.margin
    raise ConfigError(
        "the distributed DP noise does not fit in the secure-aggregation ring; raise "
        "aggregation.bits",
        key="aggregation.bits",
    )


def _build_trainer(
    cfg: PrivacyConfig,
    plan: RoundPlan,
    model: nn.Module,
    task: str,
    local: LocalConfig,
    engine: str,
) -> Trainer:
    sl = cfg.sample_level
    kw: dict[str, Any] = dict(
        max_grad_norm=sl.max_grad_norm,
        expected_batch_size=sl.expected_batch_size,
        sampling_rate=sl.sampling_rate,
        epochs=sl.epochs,
        secure_rng=cfg.secure_rng,
        engine=engine,
    )
    probe = dpsgd_trainer(model, task, local, noise_multiplier=1.0, **kw)
    if sl.noise_multiplier is not None:
        sigma: float | dict[int, float] = float(sl.noise_multiplier)
    else:
        sigma = {}
        for n in sorted({int(s) for s in plan.site_sizes}):
            probe_event = probe.schedule.compose(dpe.GaussianDpEvent(1.0), n)
            # the calibration depends only on the schedule's event (its rate and steps
            # included) and the budget
            key = (repr(probe_event), plan.rounds, cfg.target_epsilon, cfg.delta,
                   cfg.accountant)
            if key not in _SAMPLE_SIGMA:

                def round_events(z: float, n: int = n) -> dpe.DpEvent:
                    step = dpe.GaussianDpEvent(z)
                    return dpe.SelfComposedDpEvent(probe.schedule.compose(step, n), plan.rounds)

                _SAMPLE_SIGMA[key] = calibrate_noise(
                    round_events,
                    cfg.target_epsilon,
                    cfg.delta,
                    cfg.accountant,
                    "privacy.sample_level.noise_multiplier",
                )
            sigma[n] = _SAMPLE_SIGMA[key]
    return dpsgd_trainer(model, task, local, noise_multiplier=sigma, **kw)


def _build_client_chain(cfg: PrivacyConfig, plan: RoundPlan) -> Chain:
    cl = cfg.client_level
    m = float(plan.cohort_size)
    rate = cohort_rate(plan.sampling, m, plan.n_sites)
    adaptive = None
    if cl.adaptive is not None and cl.adaptive.enabled:
        a = cl.adaptive
        adaptive = {"target_quantile": a.target_quantile, "lr": a.lr,
                    "count_stddev": a.count_stddev}

    def make(z: float) -> Chain:
        return presets.dp_fedavg(cl.clip_norm, z, m, adaptive)

    z = cl.noise_multiplier
    if z is None:
        z = calibrate_noise(
            lambda v: dpe.SelfComposedDpEvent(
                sampled(make(v).stages[0].round_event(), plan.sampling, rate, cfg.amplify),
                plan.rounds,
            ),
            cfg.target_epsilon,
            cfg.delta,
            cfg.accountant,
            "privacy.client_level.noise_multiplier",
        )
    if not math.isfinite(z):
        raise ConfigError(
            "noise multiplier must be finite", key="privacy.client_level.noise_multiplier"
        )
    return make(float(z))
