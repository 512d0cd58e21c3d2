"""Buffered asynchronous aggregation (FedBuff, Nguyen et al. 2022) in simulated time.

No round waits for its slowest site. ``concurrency`` sites (``federation.cohort_size``,
default all) train at once, each on the model version it last received; the server
applies an update as soon as ``K`` contributions (``federation.buffered.buffer_size``)
are buffered:

  1. when a site starts a job it receives the current model (version ``v``) and trains
     on it; the job takes ``T(site, job)`` simulated seconds
     (:class:`~veil.federation.latency.LatencyModel`), and is lost with probability
     ``federation.dropout_rate``;
  2. jobs arrive in order of simulated time (ties: lower site id first). A contribution
     that arrives while the server is at version ``v'`` has staleness ``s = v' − v``; if
     ``s > max_staleness`` it is dropped and counted (``stale_dropped``), otherwise it
     joins the buffer and its site waits for the buffer to be applied (so a site is in a
     buffer at most once);
  3. when the buffer holds ``K`` contributions, each site scales its update by its
     staleness weight ``w(s)`` (:func:`staleness_weight`: constant 1, ``1/√(1+s)``, or
     ``(1+s)^−a``) and sends it through the run's pipeline — clip, DP, quantise, the
     summation protocol (SecAgg+ over exactly the buffer's members) — the server
     decodes (the mean divides by ``K`` or by the summed example weights) and steps its
     optimiser: version ``v' + 1``;
  4. the buffer's sites (and, below the concurrency, idle sites drawn from the seed)
     start new jobs on the new version; the run checkpoints.

With ``K`` = concurrency = every site, every contribution has staleness 0 and each
applied buffer is one synchronous FedAvg round over all sites: the result equals
:class:`~veil.federation.simulation.Simulation` bit for bit, whatever the latencies
(tested).

Determinism: job durations, losses and idle-site picks are drawn from
``(seed, site, job)`` or ``(seed, jobs started)``, never from a running stream; a job's
update comes from the trainer with ``round = `` the version it started on (a site starts
at most one job per version that reaches a buffer). The checkpoint holds the simulated
clock, every job in flight (with its update) and the counters, so a resumed run ends
with exactly the model of an uninterrupted one.

Privacy (docs/async.md): buffer membership is decided by arrival times, not by a secret
random draw, so no sampling amplification is claimed. Each applied buffer is one release
with every site possibly in it; under add-or-remove-one-site *with the schedule held
fixed* (the schedule — who arrives when, on which version — is a function of the public
latency model and seed, not of any data; removing a site zeroes each of its
contributions) a site changes each release by at most one clipped update (weight ≤ 1),
so DP-FedAvg's release is ``Gaussian(z)`` and ``T`` releases compose to
``SelfComposed(Gaussian(z), T)`` (charged by the ordinary privacy hook with a
full-participation plan).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from veil.errors import ConfigError
from veil.federation.buffered_config import BufferedConfig
from veil.federation.hooks import RoundPlan
from veil.federation.latency import LatencyModel
from veil.federation.simulation import RunResult, Simulation, make_plan
from veil.federation.site import SiteStreams

__all__ = [
    "BufferedSimulation", "STALENESS", "staleness_weight", "buffered_accounting", "RELATION",
]

STALENESS = ("constant", "sqrt", "polynomial")

#: the neighbouring relation a buffered run's client-level ε is stated under
RELATION = "add_or_remove_one_site_schedule_fixed"


def staleness_weight(kind: str, staleness: int, exponent: float = 0.5) -> float:
    """The weight of a contribution ``staleness`` versions old.

    ``constant``: 1; ``sqrt``: ``1/√(1+s)``; ``polynomial``: ``(1+s)^−exponent``
    (FedBuff's and FedAsync's choices). Always in (0, 1].

    Raises:
        ConfigError: unknown kind, negative staleness or exponent ≤ 0.
    """
    if kind not in STALENESS:
        raise ConfigError(
            f"unknown staleness weight {kind!r}; choose one of {STALENESS}",
            key="federation.buffered.staleness",
        )
    if staleness < 0 or not exponent > 0:
        raise ConfigError(
            f"staleness must be >= 0 and the exponent > 0 (got {staleness}, {exponent})",
            key="federation.buffered.staleness_exponent",
        )
    if kind == "constant":
        return 1.0
    a = 0.5 if kind == "sqrt" else float(exponent)
    return float((1.0 + staleness) ** -a)


def buffered_accounting(n_sites: int, buffer_size: int) -> dict[str, Any]:
    """How a buffered run's client-level ε is accounted, for its record."""
    return {
        "neighbouring_relation": RELATION,
        "sampling": "buffered (arrival order)",
        "amplification": "none claimed: buffer membership follows arrival times, not a "
        "secret random draw",
        "amplified": False,
        "sampling_rate": 1.0,
        "sensitivity": "one site's clipped update per applied buffer (a site is in a "
        "buffer at most once; staleness weights are <= 1)",
        "releases": "each applied buffer is one release, every site possibly in it",
        "buffer_size": int(buffer_size),
        "n_sites": int(n_sites),
        "epsilon_holds_against_record_reader": True,
        "note": "the schedule (arrival times, staleness, buffer sizes) is public: a function "
        "of the latency model and the seed, not of the data; removing a site zeroes its "
        "contributions and leaves the schedule as it was",
    }


@dataclass
class _Job:
    """One site's job in flight: started on ``version``, arrives at ``arrive_s``."""

    site: int
    version: int
    job: int
    start_s: float
    arrive_s: float
    lost: bool
    update: torch.Tensor | None

    def state(self) -> dict[str, Any]:
        return {"site": self.site, "version": self.version, "job": self.job,
                "start_s": self.start_s, "arrive_s": self.arrive_s, "lost": self.lost,
                "update": self.update}


class BufferedSimulation(Simulation):
    """A buffered asynchronous run (FedBuff) of one server and many sites, in one process.

    Takes :class:`~veil.federation.simulation.Simulation`'s arguments, with two changes:
    ``cohort`` is the *concurrency* (sites training at once, default all) and ``rounds``
    counts applied buffers. ``deadline_s`` and Poisson sampling do not apply.

    Args:
        *args: as for :class:`Simulation`.
        buffered: buffer size, staleness weighting and the latency tail.
        latency: the job durations (default: the
            :class:`~veil.federation.latency.LatencyModel` of the config); anything with
            ``seconds(site, job)`` and ``describe()``, e.g. a hand-written schedule.
        **kwargs: as for :class:`Simulation`.

    Raises:
        ConfigError: no buffer size, a buffer larger than the sites, under 3 per buffer
            with secure aggregation, a deadline, or Poisson sampling.
    """

    #: the schedule is a function of the public latency model and seed (module docstring)
    public_schedule = True

    def __init__(
        self, *args: Any, buffered: BufferedConfig, latency: Any = None, **kwargs: Any
    ) -> None:
        if kwargs.get("sampling", "fixed") != "fixed":
            raise ConfigError("buffered mode needs fixed sampling", key="federation.sampling")
        if math.isfinite(kwargs.get("deadline_s", math.inf)):
            raise ConfigError(
                "buffered mode has no round deadline; bound staleness instead",
                key="federation.deadline_s",
            )
        k = buffered.buffer_size
        if k is None:
            raise ConfigError("buffered mode needs a buffer size",
                              key="federation.buffered.buffer_size")
        concurrency = kwargs.get("cohort")
        kwargs["cohort"] = float(k)  # the server sums K contributions per update
        super().__init__(*args, **kwargs)
        self.buffered = buffered
        self.buffer_size = int(k)
        self.concurrency = min(self.n_sites, int(round(concurrency or self.n_sites)))
        if self.concurrency < 1:
            raise ConfigError("buffered mode needs at least one site training",
                              key="federation.cohort_size")
        self.latency = latency if latency is not None else LatencyModel.from_config(
            self.n_sites, self.seed, self.latency_s, self.latency_spread, buffered
        )
        self.sim_time_s = 0.0
        self.jobs: list[_Job] = []
        self.site_jobs = np.zeros(self.n_sites, dtype=np.int64)
        self.jobs_started = 0
        self.started = False
        self.totals: dict[str, int] = {"stale_dropped": 0, "lost": 0}
        self._since: dict[str, float] = {"stale_dropped": 0, "lost": 0, "train_s": 0.0}

    # ---------------------------------------------------------------- planning
    def plan(self) -> RoundPlan:
        """The plan hooks vet: every site may be in every applied buffer.

        The cohort is the whole population, so the privacy hook charges each release
        without amplification (:mod:`veil.privacy.neighbouring`: rate 1, the event itself).
        """
        return make_plan(
            self.data.sizes, self.rounds, float(self.n_sites), "fixed", self.trainer.config
        )

    def weight(self, staleness: int) -> float:
        """The configured staleness weight of a contribution ``staleness`` versions old."""
        b = self.buffered
        return staleness_weight(b.staleness, staleness, b.staleness_exponent)

    # ---------------------------------------------------------------- the event loop
    def _start(self, sites: list[int]) -> None:
        """``sites`` start jobs on the current version (trained together, one call)."""
        if not sites:
            return
        ids = np.asarray(sorted(sites), dtype=np.int64)
        v = self.next_round
        lost = []
        for s in ids:
            j = int(self.site_jobs[s])
            self.site_jobs[s] += 1
            rng = np.random.default_rng([self.seed, int(s), j, 0xD0])
            lost.append(bool(rng.random() < self.dropout_rate))
        train = ids[~np.asarray(lost)]
        t1 = time.perf_counter()
        rows = (
            self.trainer.train(self.params, self.data, train, self.seed, v,
                               SiteStreams(self.sites))
            if train.size else None
        )
        self._since["train_s"] += time.perf_counter() - t1
        row_of = {int(s): i for i, s in enumerate(train)}
        for s, gone in zip(ids, lost):
            j = int(self.site_jobs[s]) - 1
            upd = None if gone or rows is None else rows[row_of[int(s)]].clone()
            self.jobs.append(_Job(int(s), v, j, self.sim_time_s,
                                  self.sim_time_s + self.latency.seconds(int(s), j), gone, upd))

    def _fill(self, waiting: set[int]) -> None:
        """Start idle sites until ``concurrency`` train (idle: not training, not waiting)."""
        busy = {j.site for j in self.jobs} | waiting
        idle = [s for s in range(self.n_sites) if s not in busy]
        free = self.concurrency - len(self.jobs)
        if free <= 0 or not idle:
            return
        if free >= len(idle):
            picked = idle
        else:  # a seeded draw among idle sites (public: no amplification is claimed)
            rng = np.random.default_rng([self.seed, self.jobs_started, 0x57A7])
            picked = sorted(int(s) for s in rng.choice(idle, size=free, replace=False))
        self.jobs_started += len(picked)
        self._start(list(picked))

    def _collect(self) -> list[tuple[_Job, int]]:
        """Process arrivals in simulated time until ``K`` contributions are buffered."""
        buffer: list[tuple[_Job, int]] = []
        maxs = self.buffered.max_staleness
        while len(buffer) < self.buffer_size:
            job = min(self.jobs, key=lambda j: (j.arrive_s, j.site))
            self.jobs.remove(job)
            self.sim_time_s = max(self.sim_time_s, job.arrive_s)
            staleness = self.next_round - job.version
            if job.lost:
                self._since["lost"] += 1
            elif maxs is not None and staleness > maxs:
                self._since["stale_dropped"] += 1
            else:
                buffer.append((job, staleness))
            self._fill({j.site for j, _ in buffer})
        return buffer

    def run_round(self, r: int) -> dict[str, Any]:
        """Wait (in simulated time) for the next ``K`` contributions and apply them.

        Returns the applied update's record: simulated time, buffer size, each member's
        staleness and weight, and the contributions dropped as stale or lost since the
        previous update.
        """
        t0 = time.perf_counter()
        if not self.started:
            self.started = True
            self._fill(set())
        buffer = sorted(self._collect(), key=lambda b: b[0].site)
        ids = np.asarray([j.site for j, _ in buffer], dtype=np.int64)
        stale = np.asarray([s for _, s in buffer], dtype=np.int64)
        weights = np.asarray([self.weight(int(s)) for s in stale], dtype=np.float32)
        rows = torch.stack([j.update for j, _ in buffer]).numpy()  # type: ignore[misc]
        if not np.all(weights == 1.0):
            rows = rows * weights[:, None]  # each site scales its own update
        order = np.argsort(stale, kind="stable")  # listed by staleness, not by site
        rec: dict[str, Any] = {
            "round": r,
            "cohort": ids.tolist(),
            "sim_time_s": self.sim_time_s,
            "buffer_size": self.buffer_size,
            "staleness": stale[order].tolist(),
            "staleness_weights": [float(w) for w in weights[order]],
            "stale_dropped": int(self._since["stale_dropped"]),
            "lost": int(self._since["lost"]),
            "train_s": self._since["train_s"],
        }
        for k in ("stale_dropped", "lost"):
            self.totals[k] += int(self._since[k])
        self._since = {"stale_dropped": 0, "lost": 0, "train_s": 0.0}
        events, survivors = self.aggregate_updates(rec, r, ids, rows, {})
        self._finish(rec, r, t0, events, survivors, ids)
        self.next_round = r + 1  # the new version: the buffer's sites start on it
        self._fill(set())
        return rec

    def run(self, resume: bool = False) -> RunResult:
        """Run (or continue) until ``rounds`` buffers are applied or a hook stops the run.

        Raises:
            BudgetExceededError: a hook refused the plan before anything ran.
            ConfigError: resuming with a checkpoint that does not match.
        """
        result = super().run(resume)
        if "privacy_accounting" in result.summary:
            result.summary["privacy_accounting"] = buffered_accounting(
                self.n_sites, self.buffer_size
            )
        return result

    def schedule(self) -> dict[str, Any]:
        """The run's asynchronous schedule so far, for its record."""
        b = self.buffered
        return {
            "mode": "buffered",
            "buffer_size": self.buffer_size,
            "concurrency": self.concurrency,
            "max_staleness": b.max_staleness,
            "staleness": b.staleness,
            "staleness_exponent": b.staleness_exponent if b.staleness == "polynomial" else None,
            "latency": self.latency.describe(),
            "sim_time_s": self.sim_time_s,
            "updates_applied": self.next_round,
            "stale_dropped": self.totals["stale_dropped"],
            "lost": self.totals["lost"],
            "time_is": "simulated seconds from the latency model (nothing waits)",
        }

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The simulation's state plus the clock, the jobs in flight and the counters."""
        out = super().state_dict()
        out["buffered"] = {
            "sim_time_s": self.sim_time_s,
            "jobs": [j.state() for j in self.jobs],
            "site_jobs": self.site_jobs.copy(),
            "jobs_started": self.jobs_started,
            "started": self.started,
            "totals": dict(self.totals),
            "since": dict(self._since),
            "buffer_size": self.buffer_size,
        }
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`.

        Raises:
            ConfigError: the state is not a buffered run's, or of another buffer size.
        """
        b = state.get("buffered")
        if not isinstance(b, Mapping) or b.get("buffer_size") != self.buffer_size:
            raise ConfigError(
                "the checkpoint was not written by a buffered run of this buffer size; use "
                "the same config to resume, or a new run name"
            )
        super().load_state_dict(state)
        self.sim_time_s = float(b["sim_time_s"])
        self.jobs = [_Job(int(j["site"]), int(j["version"]), int(j["job"]),
                          float(j["start_s"]), float(j["arrive_s"]), bool(j["lost"]),
                          j["update"]) for j in b["jobs"]]
        self.site_jobs = np.asarray(b["site_jobs"], dtype=np.int64).copy()
        self.jobs_started = int(b["jobs_started"])
        self.started = bool(b["started"])
        self.totals = {k: int(v) for k, v in b["totals"].items()}
        self._since = dict(b["since"])


def buffered_dp_chain(clip_norm: float, noise_multiplier: float, buffer_size: int) -> Any:
    """DP-FedAvg for a buffered run: clip to C, noise ``z C`` on each buffer's sum, divide
    by ``K`` (the fixed denominator: every applied buffer holds exactly K contributions).

    ``z`` is the one :func:`veil.privacy.build_privacy` calibrated for a full-participation
    plan (each release charged as ``Gaussian(z)``, whatever the denominator).
    """
    from veil.aggregation import presets

    return presets.dp_fedavg(clip_norm, noise_multiplier, float(buffer_size))
