"""Accounted hyper-parameter search over whole runs: ``veil tune CONFIG``.

A run config with a ``[tuning]`` section names candidate settings (learning rates,
momentum, the server optimiser: keys that do not change the DP mechanism). The search
(:func:`veil.privacy.tuning.tune`, Papernot & Steinke 2022) draws the number of trials
``K`` from the CSPRNG, trains ``K`` runs with candidates drawn uniformly, scores each by a
*noisy* accuracy on the sites' own training data, releases only the best run and deletes
the others. The whole search, ``RepeatAndSelect`` of one trial's events (RDP accountant),
is inside ``privacy.target_epsilon``: veil calibrates each trial's own target ``ε'`` so
that it is. The bound holds only while ``K`` stays secret (:mod:`veil.privacy.tuning`):
nothing veil writes holds ``K`` or the search's wall time, and the progress lines, which
tell ``K`` to whoever watches them, must not be published.

Example (the TOML equivalent is a ``[tuning]`` table with the same keys)::

    >>> cfg = parse_config({..., "tuning": {"candidates": [{"local.lr": 0.05},
    ...                                                   {"local.lr": 0.2}]}})  # doctest: +SKIP
    >>> out = tune_run(cfg)                                                     # doctest: +SKIP
    >>> out.epsilon, out.selected                                               # doctest: +SKIP

The score, per trial (what it releases besides the model):

* sample-level DP: every site adds ``N(0, score_noise²)`` to its count of correct
  predictions on its own training examples (sensitivity 1 under add/remove one example);
  each site spends ``Gaussian(score_noise)`` per trial;
* client-level DP: the server adds ``N(0, client_score_noise²)`` to the sum over sites of
  each site's (noisy) accuracy clipped to ``[0, 1]`` (sensitivity 1 under add/remove one
  site), like the server adds the run's central noise; ``Gaussian(client_score_noise)``.

Refused before any trial, with the reason: no ``[privacy]``; ``privacy.secure_rng =
false`` (trials' noise must be independent); distributed client-level noise (the score's
noise would be the server's); client-level DP with secure aggregation (the score would
show the server each site's accuracy); buffered or Flower runs; canaries; regression
tasks; candidate keys that are not in :data:`TUNABLE`. A search cannot be resumed: its
trials already spent privacy. An interrupted search deletes its trials and leaves
``search-interrupted.json``; that directory is refused unless ``restart``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from dp_accounting import dp_event as dpe

from veil.app.train import INTERRUPTED, TRIALS_DIR, TrainOutput, set_aside, train
from veil.crypto.prg import SecureRng
from veil.errors import BudgetExceededError, ConfigError
from veil.federation.config import RunConfig, parse_config, set_dotted
from veil.federation.record import RECORD
from veil.federation.tuning_config import TUNABLE, TuningConfig, parse_tuning
from veil.privacy.accounting import epsilon
from veil.privacy.tuning import tune

__all__ = ["TUNABLE", "TuningConfig", "TuneOutput", "parse_tuning", "search_epsilon", "tune_run"]

_KEY = "tuning"
_ACCOUNTANT = "rdp"  # dp-accounting composes RepeatAndSelect on RDP only
_TOL = 1e-9
#: a trial's own privacy figures, kept under ``privacy.trial`` in the released record
_TRIAL_KEYS = ("privacy_target_epsilon", "privacy_planned_epsilon", "epsilon_client",
               "epsilon_sample_max", "epsilon_sample_per_site", "epsilon_sample_bound")


@dataclass
class TuneOutput:
    """A finished search: the released run and what may be said about the search.

    Attributes:
        result: the released (selected) run, moved to the search's run directory.
        selected: the released trial's candidate overrides.
        epsilon: the whole search's ε per level (``"client"``, ``"sample"``: largest over
            sites) at ``privacy.delta``, RDP accountant.
        trial_target_epsilon: the ``ε'`` every trial was calibrated to.
    """

    result: TrainOutput = field(repr=False)
    selected: dict[str, Any]
    epsilon: dict[str, float]
    trial_target_epsilon: float

    @property
    def run_dir(self) -> Path:
        """Where the released run's files are."""
        return self.result.run_dir

    @property
    def record(self) -> dict[str, Any]:
        """Its ``record.json`` (with a ``tuning`` section)."""
        return self.result.record

    @property
    def final_accuracy(self) -> float | None:
        """The released run's last test accuracy."""
        return self.result.final_accuracy


def _check_supported(cfg: RunConfig) -> None:
    p = cfg.privacy
    why = None
    if not p.enabled:
        why = ("the search is accounted in ε: enable [privacy] (without DP, `veil sweep` "
               "compares configurations)", "privacy.enabled")
    elif p.debug_unnoised_statistics:
        why = ("privacy.debug_unnoised_statistics = true: the search's ε would not be a valid "
               "claim", "privacy.debug_unnoised_statistics")
    elif not p.secure_rng:
        why = ("privacy.secure_rng = false would give every trial the same noise streams; "
               "the search needs independent trials", "privacy.secure_rng")
    elif p.client_on and p.client_level.mechanism == "distributed":
        why = ("the client-level score is noised by the server; with distributed noise the "
               "server is not trusted to add it: use privacy.client_level.mechanism = "
               "'central' to tune", "privacy.client_level.mechanism")
    elif p.client_on and cfg.aggregation.summation in ("secagg", "ckks"):
        why = ("the client-level score sums the sites' exact accuracies at the server, which "
               f"aggregation.summation = '{cfg.aggregation.summation}' is there to prevent: "
               "tune with summation = 'plain' (or sample-level DP only)",
               "aggregation.summation")
    elif cfg.federation.mode != "sync" or cfg.federation.transport != "simulation":
        why = ("veil tune runs synchronous simulated trials (federation.mode = 'sync', "
               "federation.transport = 'simulation')", "federation.mode")
    elif cfg.audit.canaries:
        why = ("canary audits of a search are not supported: set audit.canaries = 0",
               "audit.canaries")
    if why is not None:
        raise ConfigError(why[0], key=why[1])


def _trial_config(cfg: RunConfig, *overrides: Mapping[str, Any]) -> RunConfig:
    """``cfg`` without ``[tuning]``, with dotted-key overrides (a candidate, then the
    trial's own settings) applied in order."""
    d = cfg.model_dump(mode="json", by_alias=True)
    d["tuning"] = None
    for o in overrides:
        set_dotted(d, o)
    return parse_config(d)


def _planned(cfg: RunConfig) -> dict[str, list[dpe.DpEvent]]:
    """One trial's DP events per level, as the run would plan and charge them."""
    from veil.federation.build import build_federation
    from veil.privacy.setup import PrivacyHook

    fed = build_federation(cfg)
    if fed.dataset.task != "classification":
        raise ConfigError("veil tune scores by accuracy: classification tasks only", key=_KEY)
    hook = next(h for h in fed.hooks if isinstance(h, PrivacyHook))
    hook.before_run(fed.plan())  # raises BudgetExceededError when a trial alone is over
    return hook.planned_events(cfg.rounds)


def search_epsilon(
    events: Mapping[str, list[dpe.DpEvent]], tc: TuningConfig, delta: float
) -> dict[str, float]:
    """The whole search's ε per level: ``RepeatAndSelect`` of (run + score) on RDP.

    Args:
        events: one trial's planned events (``"client"``: the federation's; ``"sample"``:
            each site's), from the run's privacy hook.
        tc: the search (law of ``K``, score noise).
        delta: δ of the run.
    """
    plan, out = tc.plan, {}
    if events.get("sample"):
        score = dpe.GaussianDpEvent(tc.score_noise)
        distinct: list[dpe.DpEvent] = []
        for e in events["sample"]:
            if e not in distinct:
                distinct.append(e)
        out["sample"] = max(
            epsilon(plan.event(dpe.ComposedDpEvent([e, score])), delta, _ACCOUNTANT)
            for e in distinct
        )
    if events.get("client"):
        score = dpe.GaussianDpEvent(tc.client_score_noise)
        out["client"] = epsilon(
            plan.event(dpe.ComposedDpEvent([events["client"][0], score])), delta, _ACCOUNTANT
        )
    return out


def _calibrate(
    cfg: RunConfig, tc: TuningConfig, say: Callable[[str], None]
) -> tuple[float, dict[str, float], dict[str, list[dpe.DpEvent]]]:
    """The largest per-trial target ``ε'`` whose search fits ``privacy.target_epsilon``."""
    target, delta = cfg.privacy.target_epsilon, cfg.privacy.delta
    cand0 = tc.candidates[0]

    def at(e_trial: float) -> tuple[dict[str, float], dict[str, list[dpe.DpEvent]]] | None:
        try:
            ev = _planned(_trial_config(cfg, cand0, {"privacy.target_epsilon": e_trial}))
        except (BudgetExceededError, ConfigError):
            return None  # no noise reaches this ε', or a fixed noise is over it
        return search_epsilon(ev, tc, delta), ev

    def fits(got: tuple[dict[str, float], Any] | None) -> bool:
        return got is not None and max(got[0].values()) <= target + _TOL

    pl, sl = cfg.privacy.client_level, cfg.privacy.sample_level
    fixed = (cfg.privacy.client_on and pl.noise_multiplier is not None) or (
        cfg.privacy.sample_on and sl.noise_multiplier is not None
    )
    # at the full target: a bad config or a fixed noise over budget is reported as it is
    ev = _planned(_trial_config(cfg, cand0, {"privacy.target_epsilon": target}))
    top = (search_epsilon(ev, tc, delta), ev)
    if fits(top):
        return target, top[0], top[1]
    if fixed:
        spent = ", ".join(f"{k} ε={v:.3f}" for k, v in top[0].items())
        raise BudgetExceededError(
            f"the search would cost {spent} > target "
            f"{target:g} at δ={delta:g}: leave the noise multipliers unset so veil calibrates "
            "each trial for the whole search, or raise tuning.score_noise / "
            "client_score_noise, lower tuning.mean_runs, or raise privacy.target_epsilon"
        )
    # Illinois (regula falsi) on log ε': a handful of calibrations instead of a bisection
    def gap(got: tuple[dict[str, float], Any] | None) -> float:
        return math.inf if got is None else math.log(max(got[0].values()) / target)

    hi, f_hi = math.log(target), gap(top)
    lo = got = None
    for div in (2.0, 8.0, 64.0):
        got = at(target / div)
        if fits(got):
            lo = math.log(target / div)
            break
        hi, f_hi = math.log(target / div), gap(got)
    if lo is None or got is None:
        raise BudgetExceededError(
            f"even trials at ε'={target / 64:.3g} make the search cost more than {target:g} "
            f"at δ={delta:g}: raise tuning.score_noise / client_score_noise, lower "
            "tuning.mean_runs, or raise privacy.target_epsilon"
        )
    f_lo, best, side = gap(got), (math.exp(lo), got), 0
    for _ in range(12):
        if f_lo > -0.005 or hi - lo < 0.005:  # within 0.5 % of the budget, or of ε'
            break
        mid = hi - f_hi * (hi - lo) / (f_hi - f_lo) if math.isfinite(f_hi) else (lo + hi) / 2
        mid = min(max(mid, lo + 1e-4), hi - 1e-4)
        got = at(math.exp(mid))
        f_mid = gap(got)
        say(f"calibrating trials: ε' in [{math.exp(lo):.4g}, {math.exp(hi):.4g}]")
        if fits(got):
            assert got is not None
            lo, f_lo, best = mid, f_mid, (math.exp(mid), got)
            f_hi, side = (f_hi / 2 if side == -1 else f_hi), -1
        else:
            hi, f_hi = mid, f_mid
            f_lo, side = (f_lo / 2 if side == 1 else f_lo), 1
    return best[0], best[1][0], best[1][1]


#: the score of a trial that produced no model (every round aborted, which its own
#: record shows): below any accuracy, so such a trial is released only if every one failed
FAILED_SCORE = -1e300


def _score(out: TrainOutput, cfg: RunConfig, tc: TuningConfig) -> float:
    """The trial's noisy accuracy on the sites' own training data (module docstring)."""
    from veil.audit.mia import model_outputs
    from veil.models.params import load_flat_params

    fed = out.federation
    if fed is None:
        raise ConfigError("the trial returned no simulation to score", key=_KEY)
    if out.failed:
        return FAILED_SCORE
    model = copy.deepcopy(fed.model)
    load_flat_params(model, out.result.params.detach().reshape(-1))
    p = cfg.privacy
    fractions, counts, sizes = [], 0.0, 0
    for site in fed.sites:
        y = np.asarray(site.y)
        c = float((model_outputs(model, site.x).argmax(1) == y).sum())
        if p.sample_on:  # the site's own noise, from a fresh OS-keyed stream
            c += float(SecureRng.fresh().normal(1, std=tc.score_noise)[0])
        counts += c
        sizes += len(y)
        fractions.append(min(1.0, max(0.0, c / max(1, len(y)))))
    if p.client_on:
        total = sum(fractions) + float(SecureRng.fresh().normal(1, std=tc.client_score_noise)[0])
        return total / len(fractions)
    return counts / max(1, sizes)


def tune_run(
    cfg: RunConfig,
    *,
    restart: bool = False,
    progress: Callable[[str], None] | None = None,
) -> TuneOutput:
    """Run the accounted search of ``cfg``'s ``[tuning]`` section; release the best trial.

    Args:
        cfg: a run config with ``[tuning]``; ``privacy.target_epsilon`` bounds the whole
            search at every enabled level.
        restart: set aside an earlier run in the run directory (``previous-N/``), delete
            what an interrupted search left, and search again, spending the budget again.
        progress: called with one line of text per step (calibration, each finished
            trial; never a score). The lines tell ``K``: do not publish them.

    Returns:
        The released run (in ``cfg.run_dir()``) and the search's ε.

    Raises:
        ConfigError: no or bad ``[tuning]``, an unsupported setting (module docstring),
            or a run directory that already holds a run or an interrupted search.
        BudgetExceededError: the search cannot fit the budget.
    """
    from veil._fs import LOCK_FILE, RunLock, write_json_atomic
    from veil.federation.record import now_iso

    say = progress or (lambda _msg: None)
    tc = parse_tuning(cfg.tuning)
    _check_supported(cfg)
    for i, cand in enumerate(tc.candidates):  # every candidate valid before any trial
        try:
            _trial_config(cfg, cand)
        except ConfigError as e:
            raise ConfigError(f"tuning.candidates[{i}]: {e}", key=f"{_KEY}.candidates") from None
    run_dir = cfg.run_dir()
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a directory", key="output_dir")
    if cfg.audit.log:
        from veil.audit.log import verify_before_run

        verify_before_run(Path(cfg.output_dir) / "audit.log")
    trials_dir = run_dir / TRIALS_DIR
    with RunLock(run_dir) as lock, _sigterm_as_exit():
        # anything but the lock and set-aside runs: an earlier run, or a stopped search
        held = sorted(p.name for p in run_dir.iterdir()
                      if p.name != LOCK_FILE and not p.name.startswith("previous-"))
        if held and not restart:
            raise ConfigError(
                f"{run_dir} already holds {', '.join(held)} (an earlier run, or a search "
                "that stopped after its trials spent privacy); use --restart to set it "
                "aside in previous-N/ and search again, spending the budget again, or a new "
                "name",
                key="name",
            )
        if restart:
            if trials_dir.exists():  # unselected trials of a killed search: never kept
                shutil.rmtree(trials_dir)
            set_aside(run_dir)
        e_trial, eps, _events = _calibrate(cfg, tc, say)
        # candidates set only TUNABLE keys, which leave the events as they are (tested)
        say(f"each trial calibrated to ε'={e_trial:.4g}; whole search: "
            + ", ".join(f"{k} ε={v:.4f}" for k, v in eps.items()))

        kept: dict[str, Any] = {}  # the best trial so far: the only one with files

        def trial(ci: int, i: int) -> tuple[TrainOutput, float]:
            tcfg = _trial_config(cfg, tc.candidates[ci], {
                "name": f"t{i}", "output_dir": str(trials_dir),
                "privacy.target_epsilon": e_trial, "audit.log": False})
            out = train(tcfg)
            score = _score(out, cfg, tc)
            out.federation = None  # the simulation (the sites' data) is not kept
            # tune() keeps the first of the highest scores; so do the files, at once
            if not kept or score > kept["score"]:
                if kept:
                    shutil.rmtree(kept["dir"])
                kept.update(score=score, dir=out.run_dir)
            else:
                shutil.rmtree(out.run_dir)
            return out, score

        try:
            best = tune(list(range(len(tc.candidates))), trial, tc.plan, SecureRng.fresh(),
                        progress=lambda i: say(f"trial {i} done"))
            out: TrainOutput = best.output
            if out.run_dir != kept["dir"]:  # the files kept are the trial tune() released
                raise AssertionError("veil tune kept another trial's files than the best's")
            selected = dict(tc.candidates[best.candidate])
            record = _released_record(out.record, cfg, tc, selected, best.score, e_trial,
                                      eps)
            # the final record first, inside the kept trial, then everything moves
            write_json_atomic(out.run_dir / RECORD, record, default=str)
            # more rounds would spend outside the search: no checkpoint to resume from
            (out.run_dir / "checkpoint.pt").unlink(missing_ok=True)
            for f in out.run_dir.iterdir():
                if f.name != LOCK_FILE:
                    f.rename(run_dir / f.name)
            shutil.rmtree(trials_dir)
            _touch_release(run_dir)
            lock.forget_since()
        except BaseException:
            # an unfinished search releases nothing: its trials go, a marker stays (they
            # spent privacy; the marker says so and blocks a silent second search)
            shutil.rmtree(trials_dir, ignore_errors=True)
            stopped = {
                "name": cfg.name, "created": now_iso(),
                "config": cfg.model_dump(mode="json"),
                # a random id: the log keeps every stopped search, even of one config
                "seeds": {"seed": cfg.seed, "search_id": SecureRng.fresh().bytes(8).hex()},
                "privacy": {"released": False, "epsilon_if_finished": dict(eps)},
                "tuning": {"stopped": "this search stopped before it finished; its trials "
                           "ran on the sites' data and were deleted unreleased; `veil tune "
                           "--restart` searches again, spending the budget again"},
            }
            write_json_atomic(run_dir / INTERRUPTED, stopped)
            if cfg.audit.log:  # the log shows that a search ran, though nothing came of it
                from veil.audit.log import AuditLog

                AuditLog(Path(cfg.output_dir) / "audit.log").append_run(stopped)
            raise
    if cfg.audit.log:
        from veil.audit.log import AuditLog

        AuditLog(Path(cfg.output_dir) / "audit.log").append_run(record)
    out.record = record
    out.run_dir = run_dir
    return TuneOutput(out, selected, dict(eps), e_trial)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """While a search runs, SIGTERM (``kill``, ``timeout``, a scheduler) raises SystemExit,
    so the unreleased trials are deleted as for Ctrl-C (SIGKILL cannot be caught: then
    ``trials/`` stays, and both ``veil tune`` and ``veil train`` refuse the directory)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _touch_release(run_dir: Path) -> None:
    """Give every released file one time: the kept trial's own times would tell how many
    trials ran after it."""
    import os

    now = time.time()
    for p in sorted(run_dir.rglob("*"), reverse=True):
        if not any(part.startswith("previous-") for part in p.relative_to(run_dir).parts):
            os.utime(p, (now, now))
    os.utime(run_dir, (now, now))


def _released_record(
    trial_record: Mapping[str, Any],
    cfg: RunConfig,
    tc: TuningConfig,
    selected: dict[str, Any],
    score: float,
    e_trial: float,
    eps: Mapping[str, float],
) -> dict[str, Any]:
    """The kept trial's record, restated as the search's release (no K, no search time)."""
    from veil.federation.record import now_iso

    record = dict(trial_record)
    record["name"] = cfg.name
    record["created"] = now_iso()  # the release's time: the search's start would tell K
    record["config"] = _trial_config(cfg, selected, {"privacy.target_epsilon": e_trial}).model_dump(
        mode="json")
    privacy = dict(record.get("privacy") or {})
    # the released trial's own figures move under "trial"; the top level is the search
    trial_own = {k: privacy.pop(k) for k in _TRIAL_KEYS if k in privacy}
    privacy["privacy_target_epsilon"] = cfg.privacy.target_epsilon
    privacy["epsilon_spent"] = dict(eps)  # what audits, reports and [policy] read
    privacy["epsilon_spent_accountant"] = _ACCOUNTANT
    privacy["trial"] = {"target_epsilon": e_trial, **trial_own}
    record["privacy"] = privacy
    record["tuning"] = {
        "method": "random search with a random number of trials K, best released "
        "(Papernot & Steinke 2022); RepeatAndSelect on dp-accounting's RDP accountant",
        "mean_runs": tc.mean_runs,
        "shape": tc.shape,
        "trials": "not released: the bound holds only while K stays secret",
        "candidates": [dict(c) for c in tc.candidates],
        "selected": selected,
        "selected_score": score,
        "score": "noisy accuracy on the sites' own training data",
        "score_noise": tc.score_noise if cfg.privacy.sample_on else None,
        "client_score_noise": tc.client_score_noise if cfg.privacy.client_on else None,
        "target_epsilon": cfg.privacy.target_epsilon,
        "delta": cfg.privacy.delta,
        "trial_target_epsilon": e_trial,
        "epsilon_search": dict(eps),
        "released": "the selected trial only; the others' files were deleted, and the "
        "checkpoint too (more rounds would spend privacy outside the search)",
    }
    return record
