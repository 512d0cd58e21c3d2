"""The in-process simulation: one :class:`Server` and many :class:`Site` objects, vectorised.

Each round:
  1. the server selects a cohort (fixed size without replacement, or Poisson with rate q);
  2. the simulation draws dropouts and the deadline (seeded per round);
  3. every selected site trains from the global model — all their rows in one vectorised
     call, each row from that site's own data and privacy streams;
  4. every site encodes its row through the pipeline's stages with its own stage state
     and stream (the new states stay at the sites), and the server sums, decodes and
     steps its optimiser;
  5. the simulation evaluates, lets hooks (privacy ledger, audits) see the round, and
  6. checkpoints each party's ``state_dict`` atomically, so ``resume=True`` continues from
     the last completed round and ends with exactly the model an uninterrupted run would
     have produced.

Per-round randomness is derived from ``(seed, round, site)``, never from a running stream,
which is what makes resuming exact (privacy streams are fresh OS entropy unless the run
asks for reproducible ones).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from veil.aggregation import EncodeContext, Pipeline, check_updates
from veil.data import Dataset
from veil.errors import AbortError, ConfigError, InvalidUpdateError
from veil.federation.checkpoint import load_checkpoint, save_checkpoint
from veil.federation.hooks import RoundInfo, RoundPlan, RunHook
from veil.federation.server import Server, round_half
from veil.federation.server_opt import ServerOptimizer
from veil.federation.site import Site, SiteStreams, site_streams
from veil.models.params import flat_params, load_flat_params
from veil.privacy.release import release_measurements, release_round
from veil.training import LocalConfig, SiteData, Trainer
from veil.training.data import check_parts

__all__ = [
    "Simulation", "Federation", "RunResult", "evaluate", "hide_membership", "make_plan",
    "round_half",
]


@dataclass
class RunResult:
    """What :meth:`Simulation.run` returns.

    Attributes:
        params: final global parameters (flat float32 tensor).
        rounds: per-round records (dicts, as in record.json).
        rounds_completed: number of completed rounds.
        stopped_reason: why the run stopped early (budget reached...), else None.
        summary: hooks' summaries merged (e.g. epsilon spent).
    """

    params: torch.Tensor
    rounds: list[dict[str, Any]]
    rounds_completed: int
    stopped_reason: str | None
    summary: dict[str, Any]

    @property
    def final_accuracy(self) -> float | None:
        """Last evaluated test accuracy."""
        for r in reversed(self.rounds):
            if r.get("test_accuracy") is not None:
                return float(r["test_accuracy"])
        return None


def evaluate(
    model: nn.Module, params: torch.Tensor, x: np.ndarray, y: np.ndarray, task: str
) -> tuple[float, float]:
    """Test loss and accuracy (or R² for regression) of ``params`` on ``(x, y)``."""
    load_flat_params(model, params)
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x))
        if task == "regression":
            yt = torch.from_numpy(y).float()
            mse = float(((out.reshape(-1) - yt) ** 2).mean())
            var = float(yt.var(unbiased=False)) or 1.0
            return mse, 1.0 - mse / var
        yt = torch.from_numpy(y)
        loss = float(nn.functional.cross_entropy(out, yt))
        acc = float((out.argmax(1) == yt).float().mean())
    return loss, acc


class Simulation:
    """A server and its sites training one model together, round by round, in one process.

    Args:
        model: the architecture and initial parameters.
        dataset: train/test data; the training part is split by ``parts``.
        parts: one index array per site into ``dataset.x_train`` (each becomes a
            :class:`Site` holding its own examples).
        pipeline: aggregation pipeline (e.g. ``Pipeline([WeightedMean()], PlainSum())``).
        trainer: local trainer (vectorised; DP-SGD is the same trainer with DP parts).
        server_opt: server optimiser.
        rounds: rounds to run.
        seed: seed for sampling, dropouts and batch schedules.
        cohort: sites per round (expected size for Poisson sampling).
        sampling: ``"fixed"`` or ``"poisson"``.
        dropout_rate: chance a selected site drops out in a round.
        deadline_s: simulated deadline; sites slower than it are dropped.
        latency_s, latency_spread: log-normal model of a site's round time (simulated).
        hooks: ledger / audit hooks.
        run_dir: where checkpoints go (None: no checkpoints).
        secure_rng: privacy randomness from fresh OS entropy (True) or derived from ``seed``.
        eval_every: evaluate every N rounds (and always after the last).
        on_round: callback after each round (progress display).
        secret_cohorts: draw cohorts from the privacy CSPRNG (fresh each round: a resumed
            run draws its remaining cohorts afresh, which is the same distribution).
        dp_mechanism: client-level DP mechanism (``None``: none); records keep only
            released measurements.
        record_cohorts: keep who took part (cohort, survivors, per-site bytes) in each
            round's record. ``False`` keeps only counts (``n_selected``, ``n_summed``), in
            the record, the checkpoint and what ``on_round`` sees — and with client-level
            DP not even those (:func:`veil.privacy.release.release_round`).
        debug_unnoised: keep un-noised diagnostics in DP records (the run is not private).
        behaviour: what some sites do instead of sending their honest update (attacks for
            tests and benchmarks: :mod:`veil.aggregation.attacks`); ``apply(round, ids,
            updates, params)`` returns the rows the sites send (``None``: all honest).
    """

    #: whether who takes part is public (a schedule of the seed, e.g. buffered async):
    #: then a hidden-cohort DP record may keep its counts
    public_schedule = False

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset,
        parts: Sequence[np.ndarray],
        pipeline: Pipeline,
        trainer: Trainer,
        server_opt: ServerOptimizer,
        rounds: int,
        seed: int = 0,
        cohort: float | None = None,
        sampling: str = "fixed",
        dropout_rate: float = 0.0,
        deadline_s: float = float("inf"),
        latency_s: float = 1.0,
        latency_spread: float = 0.5,
        hooks: Sequence[RunHook] = (),
        run_dir: str | os.PathLike[str] | None = None,
        secure_rng: bool = True,
        eval_every: int = 1,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        secret_cohorts: bool = False,
        dp_mechanism: str | None = None,
        record_cohorts: bool = True,
        debug_unnoised: bool = False,
        behaviour: Any = None,
    ) -> None:
        self.model = model
        self.dataset = dataset
        check_parts(parts, len(dataset.y_train))  # an index outside the data: typed error
        self.sites = [
            Site(i, dataset.x_train[p], dataset.y_train[p], site_streams(secure_rng, seed),
                 pipeline.init_site())
            for i, p in enumerate(parts)
        ]
        self.data = SiteData.from_sites([(s.x, s.y) for s in self.sites])
        self.n_sites = len(self.sites)
        self.server = Server(
            pipeline, server_opt, flat_params(model), self.n_sites, cohort, sampling, seed,
            secure_rng, secret_cohorts,
        )
        #: client-level DP mechanism (None: none); its records keep only released numbers
        self.dp_mechanism = dp_mechanism
        self.record_cohorts = record_cohorts
        self.debug_unnoised = debug_unnoised
        self.behaviour = behaviour
        self.pipeline = pipeline
        self.trainer = trainer
        self.rounds = rounds
        self.seed = seed
        self.dropout_rate = dropout_rate
        self.deadline_s = deadline_s
        self.latency_s = latency_s
        self.latency_spread = latency_spread
        self.hooks = list(hooks)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.secure_rng = secure_rng
        self.eval_every = eval_every
        self.on_round = on_round
        self.task = dataset.task
        self.records: list[dict[str, Any]] = []
        self.next_round = 0
        self.stopped_reason: str | None = None
        #: hash of the config that built this run (checked on resume), if any
        self.fingerprint: str | None = None
        #: calibrated noise multipliers of the privacy layer (for the record), if any
        self.privacy_noise: dict[str, Any] = {}

    # ---------------------------------------------------------------- views
    @property
    def params(self) -> torch.Tensor:
        """The server's global parameters."""
        return self.server.params

    @property
    def cohort(self) -> float:
        """Sites per round (expected size under Poisson sampling)."""
        return self.server.cohort

    @property
    def sampling(self) -> str:
        """The server's cohort scheme."""
        return self.server.sampling

    # ---------------------------------------------------------------- planning
    def plan(self) -> RoundPlan:
        """What hooks (the ledger) need to vet the run before it starts."""
        return make_plan(
            self.data.sizes, self.rounds, self.cohort, self.sampling, self.trainer.config
        )

    def sample_cohort(self, round: int) -> np.ndarray:
        """Sites selected for ``round`` (the server's choice)."""
        return self.server.select_cohort(round)

    def simulate_dropouts(self, round: int, cohort: np.ndarray) -> tuple[dict[int, str], int]:
        """Which selected sites drop (and at which protocol stage), and how many were late."""
        rng = np.random.default_rng([self.seed, round, 0xD0])
        drop = rng.random(len(cohort)) < self.dropout_rate
        latency = self.latency_s * np.exp(self.latency_spread * rng.standard_normal(len(cohort)))
        late = latency > self.deadline_s
        summation = self.pipeline.summation
        # a tiered summation has its stages per round (docs/ckks-aggregation.md)
        stages = tuple(summation.stages_for(round) if hasattr(summation, "stages_for")
                       else summation.stages)
        stage_pick = rng.integers(0, len(stages), size=len(cohort))
        out: dict[int, str] = {}
        for i, sid in enumerate(cohort):
            if late[i]:
                out[int(sid)] = "before_send"
            elif drop[i]:
                out[int(sid)] = stages[stage_pick[i]]
        return out, int(late.sum())

    # ---------------------------------------------------------------- the loop
    def run(self, resume: bool = False) -> RunResult:
        """Run (or continue) until ``rounds`` are done or a hook stops the run.

        Raises:
            BudgetExceededError: a hook refused the plan before any round ran.
            ConfigError: resuming with a checkpoint that does not match.
        """
        if resume:
            if self.run_dir is None:
                raise ConfigError("resume needs a run directory")
            self.load_state_dict(load_checkpoint(self.run_dir, self.state_dict()))
        plan = self.plan()
        for h in self.hooks:
            h.before_run(plan)
        while self.next_round < self.rounds and self.stopped_reason is None:
            r = self.next_round
            reason = next((h.before_round(r) for h in self.hooks if h.before_round(r)), None)
            if reason:
                self.stopped_reason = reason
                break
            rec = self.run_round(r)
            self.records.append(rec)
            self.next_round = r + 1
            if self.run_dir is not None:
                save_checkpoint(self.state_dict(), self.run_dir)
            if self.on_round is not None:
                self.on_round(rec)
        summary: dict[str, Any] = {}
        for h in self.hooks:
            summary.update(h.summary())
        return RunResult(
            self.params.clone(), list(self.records), self.next_round, self.stopped_reason, summary
        )

    def encode_at_sites(
        self, updates: np.ndarray, ids: np.ndarray, r: int
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Every site of ``ids`` encodes its row with its own state and stream (vectorised).

        The sites keep their new stage states.
        """
        ctx = EncodeContext(
            round=r,
            site_ids=ids,
            weights=self.data.sizes[ids].astype(np.float64),
            rngs=[self.sites[int(i)].stream("encode", r) for i in ids],
            cohort_size=self.server.cohort_size,
        )
        states = [self.sites[int(i)].stage_state for i in ids]
        encoded, new_states, meas = self.pipeline.encode_sites(
            self.server.broadcast(), states, updates, ctx
        )
        for i, st in zip(ids, new_states):
            self.sites[int(i)].stage_state = st
        return encoded, meas

    def run_round(self, r: int) -> dict[str, Any]:
        """One round; returns its record. The global model changes only if it succeeds."""
        t0 = time.perf_counter()
        cohort = self.sample_cohort(r)
        dropouts, n_late = self.simulate_dropouts(r, cohort)
        rec: dict[str, Any] = {"round": r, "cohort": cohort.tolist(), "late": n_late}
        if hasattr(self.pipeline.summation, "summation_for"):  # tiered: which tier summed
            rec["summation"] = self.pipeline.summation.summation_for(r)
        res = self.server.empty_cohort(r) if cohort.size == 0 else None
        if res is not None:  # central DP-FedAvg with nobody sampled: the noise alone
            rec.update(survivors=[], bytes_sent={}, bytes_per_site_mean=0.0, bytes_total=0,
                       measurements=release_measurements(
                           res.measurements, self.dp_mechanism, debug=self.debug_unnoised))
            self._finish(rec, r, t0, res.dp_events, np.asarray([], dtype=np.int64), cohort)
            return rec
        if cohort.size == 0:
            rec.update(survivors=[], skipped="empty cohort", bytes_sent={}, bytes_per_site_mean=0.0)
            self._finish(rec, r, t0, (), np.asarray([], dtype=np.int64), cohort)
            return rec
        # sites that drop before sending don't need to train (saves simulation time)
        train_ids = np.asarray(
            [s for s in cohort if dropouts.get(int(s)) != "before_send"], dtype=np.int64
        )
        t1 = time.perf_counter()
        updates = (
            self.trainer.train(
                self.params, self.data, train_ids, self.seed, r, SiteStreams(self.sites)
            )
            if train_ids.size
            else torch.zeros(0, self.params.numel())
        )
        rec["train_s"] = time.perf_counter() - t1
        if self.behaviour is not None and train_ids.size:  # malicious sites replace theirs
            updates = torch.as_tensor(self.behaviour.apply(
                r, train_ids, updates.numpy(), self.params.numpy()), dtype=updates.dtype)
        mid_drops = {s: st for s, st in dropouts.items() if st != "before_send"}
        events, survivors = self.aggregate_updates(rec, r, train_ids, updates.numpy(), mid_drops)
        self._finish(rec, r, t0, events, survivors, cohort)
        return rec

    def aggregate_updates(
        self,
        rec: dict[str, Any],
        r: int,
        train_ids: np.ndarray,
        rows: np.ndarray,
        mid_drops: Mapping[int, str],
    ) -> tuple[tuple[Any, ...], np.ndarray]:
        """Check, encode at the sites and aggregate one round's rows (row i from
        ``train_ids[i]``); fills ``rec`` and returns ``(dp_events, survivors)``.

        A lost round (every site dropped, NaN/inf everywhere, the protocol aborted) leaves
        the model as it was and says why in ``rec["aborted"]``.
        """
        events: tuple[Any, ...] = ()
        survivors = np.asarray([], dtype=np.int64)
        try:
            if train_ids.size == 0:
                raise AbortError(f"round {r}: every selected site dropped out")
            t2 = time.perf_counter()
            ok = check_updates(rows)  # a site whose update is NaN/inf sends nothing
            if not ok.all():
                rec["rejected"] = train_ids[~ok].tolist()
            if not ok.any():
                raise InvalidUpdateError(
                    f"round {r}: every site's update contained NaN/inf; nothing to aggregate"
                )
            ids = train_ids[ok]
            encoded, meas = self.encode_at_sites(rows if ok.all() else rows[ok], ids, r)
            res = self.server.aggregate(encoded, ids, r, mid_drops)
            res.measurements.update(meas)
            res.measurements["rejected_sites"] = float((~ok).sum())
            rec["aggregate_s"] = time.perf_counter() - t2
        except (AbortError, InvalidUpdateError) as e:
            # the round is lost, nothing already aggregated is: the model stays as it was
            rec.update(survivors=[], aborted=str(e), bytes_sent={}, bytes_per_site_mean=0.0)
        else:
            survivors = np.asarray(res.survivors)
            events = res.dp_events
            sent = {str(k): int(v) for k, v in res.bytes_sent.items()}
            rec.update(
                survivors=survivors.tolist(),
                bytes_sent=sent,
                # mean over the sites whose update is in the sum (dropped sites sent less)
                bytes_per_site_mean=float(np.mean([sent.get(str(int(u)), 0) for u in survivors]))
                if survivors.size
                else 0.0,
                bytes_total=int(sum(sent.values())),
                measurements=release_measurements(
                    res.measurements, self.dp_mechanism, debug=self.debug_unnoised
                ),
            )
            if res.flagged:  # sites a plaintext anomaly screen flagged
                rec["flagged"] = [int(s) for s in res.flagged]
        return events, survivors

    def _finish(
        self,
        rec: dict[str, Any],
        r: int,
        t0: float,
        events: tuple[Any, ...],
        survivors: np.ndarray,
        cohort: np.ndarray,
    ) -> None:
        if (r + 1) % self.eval_every == 0 or r + 1 == self.rounds:
            loss, acc = evaluate(
                self.model, self.params, self.dataset.x_test, self.dataset.y_test, self.task
            )
            rec["test_loss"], rec["test_accuracy"] = loss, acc
        info = RoundInfo(
            round=r,
            cohort=cohort,
            survivors=survivors,
            dp_events=events,
            measurements=rec.setdefault("measurements", {}),
        )
        for h in self.hooks:
            rec.update(h.after_round(info))
        rec["duration_s"] = time.perf_counter() - t0
        if not self.record_cohorts:
            hide_membership(rec)
            if self.hides_counts:
                # hidden cohorts: no count of the cohort either (docs/differential-privacy.md)
                release_round(rec, self.sampling, debug=self.debug_unnoised)

    @property
    def hides_counts(self) -> bool:
        """Whether records keep no count of the cohort (client-level DP, hidden cohorts,
        a schedule that is not public): :func:`veil.privacy.release.release_round` and
        :func:`~veil.privacy.release.release_final` then filter them."""
        return (not self.record_cohorts and self.dp_mechanism is not None
                and not self.public_schedule)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The run after the last completed round: each party's own state_dict."""
        return {
            "next_round": self.next_round,
            "server": self.server.state_dict(),
            "sites": [s.state_dict() for s in self.sites],
            "hooks": {h.name: h.state_dict() for h in self.hooks},
            "records": self.records,
            "stopped_reason": self.stopped_reason,
            "n_params": int(self.params.numel()),
            "n_sites": self.n_sites,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (each party loads its own piece).

        Raises:
            ConfigError: the state belongs to a run of another shape or config.
        """
        if (
            state.get("n_params") != self.params.numel()
            or state.get("n_sites") != self.n_sites
            or state.get("seed") != self.seed
        ):
            raise ConfigError(
                "the checkpoint was written by a run with a different model, sites or seed; "
                "use the same config to resume, or a new run name"
            )
        if self.fingerprint and state.get("fingerprint") not in (None, self.fingerprint):
            raise ConfigError(
                "the config changed since this run was started (only `rounds` may change on "
                "resume); restore the original config or start a new run name"
            )
        self.server.load_state_dict(state["server"])
        for site, st in zip(self.sites, state["sites"]):
            site.load_state_dict(st)
        self.next_round = int(state["next_round"])
        self.records = list(state["records"])
        self.stopped_reason = state.get("stopped_reason")
        for h in self.hooks:
            if h.name in state["hooks"]:
                h.load_state_dict(state["hooks"][h.name])

    # ---------------------------------------------------------------- helpers
    def final_model(self) -> nn.Module:
        """The model with the current global parameters loaded."""
        load_flat_params(self.model, self.params)
        return self.model


def hide_membership(rec: dict[str, Any]) -> None:
    """Replace who took part in a round's record by counts (in place).

    ``cohort`` and ``survivors`` become ``n_selected`` and ``n_summed``, the sites whose
    update was rejected (``rejected``) become ``n_rejected``; the per-site ``bytes_sent``
    table is dropped (``bytes_total`` and ``bytes_per_site_mean`` stay).
    """
    if "rejected" in rec:
        rec["n_rejected"] = len(rec.pop("rejected"))
    if "flagged" in rec:
        rec["n_flagged"] = len(rec.pop("flagged"))
    if "cohort" in rec:
        rec["n_selected"] = len(rec.pop("cohort"))
    if "survivors" in rec:
        rec["n_summed"] = len(rec.pop("survivors"))
    rec.pop("bytes_sent", None)


#: the former name of :class:`Simulation`
Federation = Simulation


def make_plan(
    site_sizes: np.ndarray, rounds: int, cohort: float, sampling: str, local: LocalConfig
) -> RoundPlan:
    """The :class:`RoundPlan` of a run, from the sites' sizes and the schedule."""
    sizes = np.asarray(site_sizes, dtype=np.int64)
    steps = local.epochs * -(-sizes // local.batch_size)
    return RoundPlan(
        rounds=rounds,
        n_sites=len(sizes),
        cohort_size=float(cohort),
        sampling=sampling,
        site_sizes=sizes.copy(),
        local_steps=steps,
    )

