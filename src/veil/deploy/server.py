"""The coordinator of a deployed run (runs inside the Flower ServerApp on the SuperLink).

It drives a :class:`~veil.federation.server.Server` — the simulation's own server object,
built by :func:`veil.deploy.parts.server_parts` from the coordinator's run config — over
:class:`~veil.transport.flower.GridLink` (one exchange per protocol stage):

0. ``hello``: the config fingerprint goes to every SuperNode; each site compares it with
   its own copy and refuses the run on any difference (the record lists refusals);
1. per round, the server's cohort (:meth:`Server.select_cohort`: seeded by
   ``(seed, round)``, or secret from the CSPRNG under client-level DP);
2. ``train``: the global parameters, the stages' broadcast state and, under SecAgg+, the
   round's public protocol parameters go to the cohort; each site checks them against its
   own config, trains, encodes and answers with its encoded row (plain sum) or its first
   SecAgg+ message;
3. SecAgg+ only: the server party's deadline closes each stage (sites silent by the stage
   timeout are dropped there) and its outbox is the next exchange, until it holds the sum
   or aborts with :class:`~veil.errors.AbortError` (too few survivors);
4. decode (central DP noise included), server optimiser step — :meth:`Server.aggregate`
   for a plain sum, :meth:`Server.apply_sum` for the sum SecAgg+ computed — then the
   client-level ledger (the simulation's privacy hook) and evaluation on the public test
   split of a bundled data set, if the run has one.

The record (``record.json``) has every round's cohort, survivors, bytes, exchange times,
released measurements and the ε each site *reported* (sample-level DP is accounted at the
sites); with hidden cohorts (client-level DP, ``privacy.record_cohorts = false``) what the
simulation keeps: counts for a fixed-size cohort, and under Poisson sampling only public or
noised keys (:func:`veil.privacy.release.release_round`: no count, timing or protocol
counter of the secret cohort). A round that aborted is recorded with its typed error and the
run ends with that error (the ServerApp fails, so ``veil deploy run`` exits non-zero).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from veil.errors import AbortError, ConfigError, InvalidUpdateError, PeerError
from veil.privacy.release import release_final
from veil.transport.flower import Envelope, GridLink
from veil.transport.sidechannels import SideChannels

__all__ = ["DeployServer", "serve"]


class DeployServer:
    """Rounds of a veil run over a Flower Grid.

    Args:
        cfg: the run config (``federation.transport = "flower"``).
        out_dir: where ``record.json`` and ``model.pt`` go.
        stage_timeout_s: deadline of each exchange (a SecAgg+ stage, or training).
        train_timeout_s: deadline of the training exchange (default: ``stage_timeout_s``).
        nodes_timeout_s: how long to wait for the SuperNodes to connect.
        min_nodes: SuperNodes needed before the first round (default: ``data.sites``).
        roster: the enrolled sites' :class:`~veil.crypto.identity.Roster`: SecAgg+ runs
            its malicious-server mode (signed advertisements and survivor lists); ``None``:
            the semi-honest mode (an honest-but-curious coordinator).
        stage_link: run SecAgg+'s stages after the first over a direct mutual-TLS link
            (:mod:`veil.deploy.stagelink`) instead of Flower messages; ``None``: Flower.

    Raises:
        ConfigError: the config cannot be deployed (:func:`veil.deploy.parts.check_deployable`).
    """

    def __init__(
        self,
        cfg: Any,
        out_dir: str | Path,
        stage_timeout_s: float = 30.0,
        train_timeout_s: float | None = None,
        nodes_timeout_s: float = 120.0,
        min_nodes: int | None = None,
        roster: Any = None,
        stage_link: Any = None,
    ) -> None:
        from veil.deploy.parts import check_deployable

        check_deployable(cfg)
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.stage_timeout_s = float(stage_timeout_s)
        self.train_timeout_s = float(train_timeout_s or stage_timeout_s)
        self.nodes_timeout_s = float(nodes_timeout_s)
        self.min_nodes = int(min_nodes or cfg.data.sites)
        self.records: list[dict[str, Any]] = []
        self.site_errors: dict[str, str] = {}
        self.example_counts: dict[str, int] = {}
        self.parts: Any = None
        self.test: tuple[np.ndarray, np.ndarray] | None = None
        self.roster = roster
        self.stage_config = stage_link
        a = cfg.aggregation
        #: fixed deadlines and shuffled handling of every exchange (sites add their delays)
        self.side_channels = SideChannels(a.fixed_deadlines, a.site_delay_s)
        if a.fixed_deadlines:  # every protocol stage lasts the config's stage deadline
            self.stage_timeout_s = float(a.stage_deadline_s)
        self.stage: Any = None  # the StageLink while the run is on

    @property
    def server(self) -> Any:
        """The :class:`~veil.federation.server.Server` (after :meth:`connect`)."""
        return self.parts.server

    @property
    def params(self) -> Any:
        """The global parameters."""
        return self.parts.server.params

    # ------------------------------------------------------------------ set-up
    def connect(self, grid: Any) -> GridLink:
        """Wait for the SuperNodes, compare configs, map site ids to nodes, build the server.

        Raises:
            AbortError: too few SuperNodes connected in time, or too few accepted the run.
            ConfigError: two SuperNodes claim the same site id, or the sites' example
                shapes differ.
        """
        from veil.deploy.parts import fingerprint

        t0 = time.monotonic()
        while len(list(grid.get_node_ids())) < self.min_nodes:
            if time.monotonic() - t0 > self.nodes_timeout_s:
                have = len(list(grid.get_node_ids()))
                raise AbortError(
                    f"only {have} of {self.min_nodes} SuperNodes connected within "
                    f"{self.nodes_timeout_s:.0f} s"
                )
            time.sleep(0.2)
        ids = sorted(int(n) for n in grid.get_node_ids())
        probe = GridLink(grid, {f"node:{n}": n for n in ids})
        meta: dict[str, Any] = {"fingerprint": fingerprint(self.cfg)}
        if self.stage_config is not None:
            from veil.deploy.stagelink import StageLink

            self.stage = StageLink(self.stage_config, range(self.cfg.data.sites),
                                   side_channels=self.side_channels)
            meta["stage_link"] = self.stage.address
        hello = Envelope("hello", -1, b"", meta)
        # the first message starts each site's agent (loads torch and the site's data)
        replies = probe.exchange({p: hello for p in probe.nodes}, self.nodes_timeout_s)
        nodes: dict[str, int] = {}
        shapes: set[tuple[int, ...]] = set()
        for party, env in replies.items():
            if env.kind == "error":
                self.site_errors[party] = f"{env.meta.get('error')}: {env.meta.get('message')}"
                continue
            site = str(int(env.meta["site"]))
            if site in nodes:
                raise ConfigError(
                    f"two SuperNodes claim site {site}", key="node-config.partition-id"
                )
            nodes[site] = probe.nodes[party]
            shapes.add(tuple(int(v) for v in env.meta.get("input_shape", ())))
            if "n_examples" in env.meta:
                self.example_counts[site] = int(env.meta["n_examples"])
        if self.stage is not None:  # a site that accepted must also be on the link
            on = self.stage.wait_for(nodes, self.nodes_timeout_s)
            for site in sorted(set(nodes) - on, key=int):
                self.site_errors[f"site:{site}"] = "accepted but not connected to the stage link"
                del nodes[site]
        if len(nodes) < self.min_nodes:
            raise AbortError(
                f"{len(nodes)} of {self.min_nodes} sites ready; refusals: {self.site_errors}"
            )
        self._build(shapes)
        return GridLink(grid, nodes, side_channels=self.side_channels)

    def _build(self, shapes: set[tuple[int, ...]]) -> None:
        from veil.deploy.parts import server_parts

        cfg = self.cfg
        if cfg.data.files:  # no data at the coordinator: the shape is the sites' (public)
            if len(shapes) != 1:
                raise ConfigError(f"the sites' examples have different shapes {sorted(shapes)}")
            schema = cfg.data.site_schema
            shape, n_classes, task = shapes.pop(), schema.label.n_classes, schema.label.task
        else:  # a bundled set: its public test split and shape
            from veil.federation.build import load_data

            ds = load_data(cfg)
            shape, n_classes, task = ds.input_shape, ds.n_classes, ds.task
            self.test = (ds.x_test, ds.y_test)
        self.task = task
        self.parts = server_parts(cfg, tuple(shape), n_classes, task)

    # ------------------------------------------------------------------ rounds
    def run(self, grid: Any) -> dict[str, Any]:
        """All rounds; writes the record and the model, and returns the record.

        Raises:
            AbortError: a round aborted (the record and model are still written).
            BudgetExceededError: the client-level plan is over budget (before any round).
        """
        try:
            return self._run(grid)
        finally:
            if self.stage is not None:
                self.stage.close()

    def _run(self, grid: Any) -> dict[str, Any]:
        from veil.federation.record import MODEL, RECORD, now_iso, write_json_atomic

        started, t0 = now_iso(), time.perf_counter()
        link = self.connect(grid)
        hooks = self.parts.hooks
        for h in hooks:
            h.before_run(self.parts.plan)
        record: dict[str, Any] = {
            "name": self.cfg.name,
            "created": started,
            "transport": "flower",
            "config": self.cfg.model_dump(mode="json"),
            "pipeline": self.server.pipeline.describe(),
            "sites": sorted(link.nodes, key=int),
            "site_refusals": self.site_errors,
            "example_counts_shared": self.example_counts,
            "threat_model": (
                f"malicious server (SecAgg+ with the enrolled roster {self.roster.digest().hex()})"
                if self.roster is not None else "honest-but-curious server"),
            "stage_transport": (
                f"SecAgg+ stages 2-5 over veil's mutual-TLS stage link ({self.stage.address})"
                if self.stage is not None else "every stage as a Flower message"),
            "evaluation": "public test split of data.dataset" if self.test is not None
            else "none at the coordinator (the sites' data never leaves them)",
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        aborted: list[str] = []
        stopped = None
        for r in range(self.cfg.rounds):
            stopped = next((h.before_round(r) for h in hooks if h.before_round(r)), None)
            if stopped:
                break
            rec, lost = self.round(link, r)
            self.records.append(rec)
            if lost is not None:
                aborted.append(lost)
            record["rounds"] = self.records
            write_json_atomic(self.out_dir / RECORD, record)
        acc = next((x["test_accuracy"] for x in reversed(self.records) if "test_accuracy" in x),
                   None)
        if self.test is None:  # data.files: the sites that opt in evaluate on their own data
            record.update(self._evaluate_at_sites(link))
        record["final"] = {
            "status": "aborted" if aborted else "completed",
            "rounds_completed": sum("aborted" not in x for x in self.records),
            "stopped_reason": stopped,
            "test_accuracy": acc,
            "wall_s": time.perf_counter() - t0,
            "exchanges": link.stats.exchanges + (self.stage.stats.exchanges if self.stage else 0),
        }
        if self.cfg.privacy.hide_cohorts:  # timings and stage counts of secret cohorts
            release_final(record["final"], self.cfg.federation.sampling,
                          debug=self.cfg.privacy.debug_unnoised_statistics)
        privacy: dict[str, Any] = {}
        for h in hooks:
            privacy.update(h.summary())
        if self.cfg.privacy.hide_cohorts:
            privacy["epsilon_reported_per_site"] = "hidden (it would tell who took part)"
        else:
            privacy["epsilon_reported_per_site"] = self._last_epsilons()
        record["privacy"] = privacy
        record["privacy_noise"] = self.parts.noise
        import torch

        torch.save({"params": self.params, "config": record["config"]}, self.out_dir / MODEL)
        write_json_atomic(self.out_dir / RECORD, record)
        if aborted:
            raise AbortError(f"{len(aborted)} round(s) aborted; first: {aborted[0]}")
        return record

    def _evaluate_at_sites(self, link: GridLink) -> dict[str, Any]:
        """The final model's metrics on each opted-in site's own test split.

        Every site is asked (not only a cohort, so the question reveals no membership);
        a site without ``share-evaluation = true`` declines and sends no statistic.
        """
        from veil.models.metrics import Metrics, summarise_sites

        env = Envelope("evaluate", self.cfg.rounds,
                       self.params.numpy().astype(np.float32).tobytes(), {})
        replies = link.exchange({p: env for p in link.nodes}, self.train_timeout_s)
        per: dict[str, Metrics] = {}
        for p, e in sorted(replies.items(), key=lambda kv: int(kv[0])):
            if e.kind == "metrics":
                try:
                    per[p] = Metrics.from_dict(e.meta["metrics"])
                except (KeyError, TypeError, ValueError):
                    continue  # a malformed answer counts as no answer
        declined = sorted(set(link.nodes) - set(per), key=int)
        return {
            "evaluation": (f"at the sites, on their own test data: {len(per)} shared their "
                           f"metrics, {len(declined)} declined or did not answer "
                           "(share-evaluation = true in a site's node config opts in)"),
            "site_metrics": {p: m.to_dict() for p, m in per.items()},
            "site_metrics_summary": summarise_sites(per),
        }

    def _last_epsilons(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for rec in self.records:
            out.update(rec.get("epsilon_reported", {}))
        return out

    def round(self, link: GridLink, r: int) -> tuple[dict[str, Any], str | None]:
        """One round; the global model changes only if it succeeds.

        Returns:
            The round's record (as released) and why the round was lost (``None``: it
            completed, or its Poisson cohort was empty); under hidden cohorts the reason
            is the record's withheld one, since it may count the cohort.
        """
        from veil.deploy.site import state_to_meta
        from veil.federation.hooks import RoundInfo
        from veil.federation.simulation import hide_membership
        from veil.privacy.release import release_measurements, release_round

        t0 = time.perf_counter()
        lost: str | None = None
        server, cfg = self.server, self.cfg
        links = [link] + ([self.stage] if self.stage is not None else [])
        up_before = [dict(x.stats.bytes_up) for x in links]
        cohort = np.asarray([u for u in server.select_cohort(r) if str(int(u)) in link.nodes],
                            dtype=np.int64)
        rec: dict[str, Any] = {"round": r, "cohort": cohort.tolist()}
        meta: dict[str, Any] = {
            "cohort_size": server.cohort_size,
            "pipeline_state": state_to_meta(server.broadcast()),
        }
        exchanges: list[float] = []
        events: tuple[Any, ...] = ()
        survivors = np.asarray([], dtype=np.int64)
        res = None
        try:
            if cohort.size:
                res = self._exchange(link, cohort, r, meta, rec, exchanges)
            # nobody sampled: the noise alone under central DP, else no step
            elif (res := server.empty_cohort(r)) is None:
                rec.update(skipped="empty cohort", survivors=[])
        except (AbortError, InvalidUpdateError) as exc:
            rec.update(aborted=f"{type(exc).__name__}: {exc}", survivors=[])
            lost = rec["aborted"]
        if res is not None:
            survivors, events = np.asarray(res.survivors, dtype=np.int64), res.dp_events
            dp = cfg.privacy.client_level.mechanism if cfg.privacy.client_on else None
            debug = cfg.privacy.enabled and cfg.privacy.debug_unnoised_statistics
            rec.update(survivors=survivors.tolist(),
                       measurements=release_measurements(res.measurements, dp, debug=debug))
        if self.test is not None and ((r + 1) % cfg.federation.eval_every == 0
                                      or r + 1 == cfg.rounds):
            from veil.federation.simulation import evaluate

            x, y = self.test
            rec["test_loss"], rec["test_accuracy"] = evaluate(
                self.parts.model, server.params, x, y, self.task)
        info = RoundInfo(round=r, cohort=cohort, survivors=survivors, dp_events=events,
                         measurements=rec.setdefault("measurements", {}))
        for h in self.parts.hooks:
            rec.update(h.after_round(info))
        rec["exchange_s"] = exchanges
        # payload bytes each site sent this round
        rec["bytes_up"] = {}
        for x, before in zip(links, up_before):
            for p, n in x.stats.bytes_up.items():
                if n - before.get(p, 0):
                    rec["bytes_up"][p] = rec["bytes_up"].get(p, 0) + n - before.get(p, 0)
        rec["duration_s"] = time.perf_counter() - t0
        if cfg.privacy.hide_cohorts:  # as the simulation records them
            hide_membership(rec)
            for key in ("epsilon_reported", "site_errors", "bytes_up"):
                rec.pop(key, None)
            # hidden Poisson cohorts: no count, timing or protocol counter either
            release_round(rec, cfg.federation.sampling,
                          debug=cfg.privacy.debug_unnoised_statistics)
            if lost is not None:  # the reason may count the cohort: LOST if hidden
                lost = str(rec.get("aborted", lost))
        return rec, lost

    def _exchange(
        self, link: GridLink, cohort: np.ndarray, r: int, meta: dict[str, Any],
        rec: dict[str, Any], exchanges: list[float],
    ) -> Any:
        """Train at the cohort and sum (plain rows, or SecAgg+ stage by stage).

        Raises:
            AbortError, InvalidUpdateError: the round is lost.
        """
        server = self.server
        party = None
        if server.pipeline.summation.name == "secagg":
            party = self._secagg_party(cohort, r, meta)
        payload = server.params.numpy().astype(np.float32).tobytes()
        env = Envelope("train", r, payload, meta)
        replies = link.exchange({str(int(u)): env for u in cohort}, self.train_timeout_s)
        exchanges.append(link.stats.seconds[-1])
        rec["epsilon_reported"] = {
            p: float(e.meta["epsilon"]) for p, e in replies.items() if "epsilon" in e.meta
        }
        rec["site_errors"] = {
            p: f"{e.meta.get('error')}: {e.meta.get('message')}"
            for p, e in replies.items() if e.kind == "error"
        }
        if party is None:
            rows = {int(p): e for p, e in replies.items() if e.kind == "row"}
            if not rows:
                raise AbortError(f"round {r} aborted: no site sent its update")
            ids = np.asarray(sorted(rows), dtype=np.int64)
            encoded = np.stack([np.frombuffer(rows[int(u)].payload, np.float64) for u in ids])
            return server.aggregate(encoded, ids, r)
        total, sids = self._secagg(self.stage or link, party, replies, r, exchanges)
        return server.apply_sum(total, sids, r)

    def _secagg_party(self, cohort: np.ndarray, r: int, meta: dict[str, Any]) -> Any:
        """The server's SecAgg+ party of round ``r`` (its public parameters into ``meta``)."""
        from veil.deploy.site import encoded_dim
        from veil.federation.config import MIN_SECURE_COHORT
        from veil.protocols.secagg import SecAggServer

        if len(cohort) < MIN_SECURE_COHORT:
            raise AbortError(f"round {r} aborted: {len(cohort)} sites available, SecAgg+ needs "
                             f"{MIN_SECURE_COHORT}")
        server = self.server
        dim = encoded_dim(server.pipeline, server.params.numel(), server.cohort_size)
        scfg = server.pipeline.summation.config(cohort, dim, r)
        if self.roster is not None:
            from veil.deploy.parts import malicious_config

            scfg = malicious_config(server.pipeline.summation, cohort, dim, r, self.roster,
                                    scfg.session)
        meta["secagg"] = {
            "site_ids": list(scfg.site_ids), "dim": scfg.dim, "bits": scfg.bits,
            "k": scfg.k, "t": scfg.threshold, "graph_seed": scfg.graph_seed.hex(),
            "session": scfg.session.hex(),
        }
        if self.roster is not None:
            meta["secagg"]["roster_digest"] = self.roster.digest().hex()
        party = SecAggServer(scfg)
        party.start()
        return party

    def _secagg(
        self, link: Any, party: Any, replies: dict[str, Envelope], r: int,
        exchanges: list[float],
    ) -> tuple[np.ndarray, np.ndarray]:
        while True:
            for name, e in replies.items():
                if e.kind != "stage" or not e.payload:
                    continue
                try:
                    party.receive(name, e.payload)
                except PeerError:
                    pass  # refused: that site is silent for this stage
            party.on_deadline()  # raises AbortError below the threshold
            if party.done:
                break
            out = {to: Envelope("stage", r, data) for to, data in party.outbox()}
            replies = link.exchange(out, self.stage_timeout_s)
            exchanges.append(link.stats.seconds[-1])
        res = party.result
        return res.total, np.asarray(res.survivors, dtype=np.int64)


def serve(grid: Any, context: Any) -> None:
    """The ServerApp's main: read the run config Flower passed and run all rounds.

    Flower run-config keys: ``veil-config`` (path of the veil TOML on the SuperLink's
    machine), ``out-dir`` (run directory), ``stage-timeout``, ``train-timeout``,
    ``nodes-timeout``, ``min-nodes`` (0: ``data.sites``), ``roster`` (path of the enrolled
    sites' roster on the SuperLink's machine; empty: the semi-honest mode), and the stage
    link's ``stage-listen``, ``stage-address``, ``stage-cert``, ``stage-key``,
    ``stage-ca`` (:mod:`veil.deploy.stagelink`; empty ``stage-listen``: Flower only).
    """
    from veil.deploy.executor import fast_object_pulls
    from veil.deploy.parts import load_roster
    from veil.deploy.stagelink import StageLinkConfig
    from veil.federation.config import load_config

    fast_object_pulls()  # the replies' objects: 10 ms first retry, not 1 s

    rc = context.run_config
    cfg = load_config(str(rc["veil-config"]))
    roster = load_roster(str(rc["roster"])) if rc.get("roster") else None
    stage = StageLinkConfig.from_run_config(rc)
    DeployServer(
        cfg,
        str(rc["out-dir"]),
        stage_timeout_s=float(rc.get("stage-timeout", 30.0)),
        train_timeout_s=float(rc.get("train-timeout", 0.0)) or None,
        nodes_timeout_s=float(rc.get("nodes-timeout", 120.0)),
        min_nodes=int(rc.get("min-nodes", 0)) or None,
        roster=roster,
        stage_link=stage,
    ).run(grid)
