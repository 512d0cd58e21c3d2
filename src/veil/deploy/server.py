"""The coordinator of a deployed run (runs inside the Flower ServerApp on the SuperLink).

Per round, through :class:`~veil.transport.flower.GridLink` (one exchange per stage):

1. sample the cohort exactly as the simulation does (seeded by ``(seed, round)``);
2. ``train``: send the global parameters (and, under SecAgg+, the round's public protocol
   parameters) to the cohort; each site trains, encodes and answers with its encoded row
   (plain sum) or its first SecAgg+ message (keys);
3. SecAgg+ only: the server party's deadline closes each stage (sites silent by the stage
   timeout are dropped there) and its outbox is the next exchange, until it holds the sum
   or aborts with :class:`~veil.errors.AbortError` (too few survivors);
4. decode, server optimiser step, evaluation on the server's own test split.

The record (``record.json`` in the run directory) has every round's cohort, survivors,
bytes, exchange times and the ε each site *reported* (sample-level DP is accounted at the
sites); a round that aborted is recorded with its typed error and the run ends with that
error (the ServerApp fails, so ``veil deploy run`` exits non-zero).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from veil.errors import AbortError, ConfigError, PeerError
from veil.transport.flower import Envelope, GridLink

__all__ = ["DeployServer", "serve"]


class DeployServer:
    """Rounds of a veil run over a Flower Grid.

    Args:
        cfg: the run config.
        out_dir: where ``record.json`` and ``model.pt`` go.
        stage_timeout_s: deadline of each exchange (a SecAgg+ stage, or training).
        train_timeout_s: deadline of the training exchange (default: ``stage_timeout_s``).
        nodes_timeout_s: how long to wait for the SuperNodes to connect.
        min_nodes: SuperNodes needed before the first round (default: ``data.sites``).
    """

    def __init__(
        self,
        cfg: Any,
        out_dir: str | Path,
        stage_timeout_s: float = 30.0,
        train_timeout_s: float | None = None,
        nodes_timeout_s: float = 120.0,
        min_nodes: int | None = None,
    ) -> None:
        from veil.deploy.parts import build_pipeline
        from veil.models.params import flat_params
        from veil.federation.server_opt import make_server_optimizer

        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.stage_timeout_s = float(stage_timeout_s)
        self.train_timeout_s = float(train_timeout_s or stage_timeout_s)
        self.nodes_timeout_s = float(nodes_timeout_s)
        self.min_nodes = int(min_nodes or cfg.data.sites)
        self.deploy = build_pipeline(cfg)
        self.test, self.model = self._model_and_test()
        self.params = flat_params(self.model).clone()
        f = cfg.federation
        self.server_opt = make_server_optimizer(f.server_optimizer, f.server_lr, f.server_momentum)
        self.pipe_state = self.deploy.pipeline.init()
        self.records: list[dict[str, Any]] = []

    def _model_and_test(self) -> tuple[Any, Any]:
        from veil.deploy.site import BUNDLED
        from veil.federation import load_data
        from veil.models import build_model

        cfg = self.cfg
        if cfg.data.dataset not in BUNDLED:
            raise ConfigError(
                "the server needs the model's input shape and a public test set: use a "
                f"bundled data set ({list(BUNDLED)}) as data.dataset for deployed runs",
                key="data.dataset",
            )
        ds = load_data(cfg)  # the server uses only the public test split
        model = build_model(
            cfg.model.name, ds.input_shape, ds.n_classes, cfg.model.hidden, seed=cfg.seed
        )
        return (ds.x_test, ds.y_test, ds.task), model

    # ------------------------------------------------------------------ set-up
    def connect(self, grid: Any) -> GridLink:
        """Wait for the SuperNodes, say hello, and map each site id to its node.

        Raises:
            AbortError: too few SuperNodes connected in time.
            ConfigError: two SuperNodes claim the same site id.
        """
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
        hello = Envelope("hello", -1, b"", {"config": self.cfg.model_dump(mode="json")})
        # the first message starts each site's agent (loads torch and the site's data)
        replies = probe.exchange({p: hello for p in probe.nodes}, self.nodes_timeout_s)
        nodes: dict[str, int] = {}
        self.site_errors: dict[str, str] = {}
        self.example_counts: dict[str, int] = {}
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
            if "n_examples" in env.meta:
                self.example_counts[site] = int(env.meta["n_examples"])
        if len(nodes) < self.min_nodes:
            raise AbortError(
                f"{len(nodes)} of {self.min_nodes} sites ready; refusals: {self.site_errors}"
            )
        return GridLink(grid, nodes)

    def cohort(self, r: int) -> np.ndarray:
        """The sites selected for round ``r`` (the simulation's rule, same seed)."""
        from veil.federation.runtime import round_half

        n = int(self.cfg.data.sites)
        cohort = float(self.cfg.cohort)
        rng = np.random.default_rng([self.cfg.seed, r, 0xC0])
        if self.cfg.federation.sampling == "poisson":
            return np.flatnonzero(rng.random(n) < cohort / n)
        return np.sort(rng.choice(n, size=int(round_half(cohort)), replace=False))

    # ------------------------------------------------------------------ rounds
    def run(self, grid: Any) -> dict[str, Any]:
        """All rounds; writes the record and the model, and returns the record.

        Raises:
            AbortError: a round aborted (the record and model are still written).
        """
        from veil.federation.record import MODEL, RECORD, now_iso, write_json_atomic

        started, t0 = now_iso(), time.perf_counter()
        link = self.connect(grid)
        record: dict[str, Any] = {
            "name": self.cfg.name,
            "created": started,
            "transport": "flower",
            "config": self.cfg.model_dump(mode="json"),
            "pipeline": self.deploy.pipeline.describe(),
            "sites": sorted(link.nodes, key=int),
            "site_refusals": self.site_errors,
            "example_counts_shared": self.example_counts,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        aborted: list[str] = []
        for r in range(self.cfg.rounds):
            rec = self.round(link, r)
            self.records.append(rec)
            if "aborted" in rec:
                aborted.append(rec["aborted"])
            record["rounds"] = self.records
            write_json_atomic(self.out_dir / RECORD, record)
        acc = next((x["test_accuracy"] for x in reversed(self.records) if "test_accuracy" in x),
                   None)
        record["final"] = {
            "status": "aborted" if aborted else "completed",
            "rounds_completed": sum("aborted" not in x for x in self.records),
            "test_accuracy": acc,
            "wall_s": time.perf_counter() - t0,
            "exchanges": link.stats.exchanges,
        }
        record["privacy"] = {"epsilon_reported_per_site": self._last_epsilons()}
        import torch

        torch.save({"params": self.params, "config": record["config"]}, self.out_dir / MODEL)
        write_json_atomic(self.out_dir / RECORD, record)
        if aborted:
            raise AbortError(f"{len(aborted)} round(s) aborted; first: {aborted[0]}")
        return record

    def _last_epsilons(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for rec in self.records:
            out.update(rec.get("epsilon_reported", {}))
        return out

    def round(self, link: GridLink, r: int) -> dict[str, Any]:
        """One round; the global model changes only if it succeeds."""
        from veil.aggregation import DecodeContext
        from veil.deploy.site import state_to_meta

        t0 = time.perf_counter()
        up_before = dict(link.stats.bytes_up)
        cohort = self.cohort(r)
        rec: dict[str, Any] = {"round": r, "cohort": cohort.tolist()}
        pipe = self.deploy.pipeline
        meta: dict[str, Any] = {
            "cohort_size": int(len(cohort)),
            "pipeline_state": state_to_meta(self.pipe_state),
        }
        party = None
        if self.deploy.secure:
            from veil.protocols.secagg import SecAggServer

            scfg = pipe.summation.config(cohort, self._encoded_dim(), r)
            meta["secagg"] = {
                "site_ids": list(scfg.site_ids), "dim": scfg.dim, "bits": scfg.bits,
                "k": scfg.k, "t": scfg.threshold, "graph_seed": scfg.graph_seed.hex(),
            }
            party = SecAggServer(scfg)
            party.start()
        payload = self.params.numpy().astype(np.float32).tobytes()
        env = Envelope("train", r, payload, meta)
        exchanges: list[float] = []
        replies = link.exchange({str(u): env for u in cohort if str(u) in link.nodes},
                                self.train_timeout_s)
        exchanges.append(link.stats.seconds[-1])
        rec["epsilon_reported"] = {
            p: float(e.meta["epsilon"]) for p, e in replies.items() if "epsilon" in e.meta
        }
        rec["site_errors"] = {
            p: f"{e.meta.get('error')}: {e.meta.get('message')}"
            for p, e in replies.items() if e.kind == "error"
        }
        try:
            if party is None:
                rows = {p: e for p, e in replies.items() if e.kind == "row"}
                if not rows:
                    raise AbortError(f"round {r} aborted: no site sent its update")
                survivors = np.asarray(sorted(int(p) for p in rows), dtype=np.int64)
                total = np.sum([np.frombuffer(rows[str(u)].payload, np.float64)
                                for u in survivors], axis=0)
            else:
                total, survivors = self._secagg(link, party, replies, r, exchanges)
        except AbortError as exc:
            rec.update(aborted=f"{type(exc).__name__}: {exc}", survivors=[])
        else:
            dctx = DecodeContext(round=r, survivors=survivors, cohort_size=int(len(cohort)))
            self.pipe_state, agg, meas, _ = pipe.decode(self.pipe_state, total, dctx)
            import torch

            step = self.server_opt.step(self.params.double().numpy(), agg)
            self.params = torch.from_numpy(step.astype(np.float32))
            rec.update(survivors=survivors.tolist(), measurements=meas)
            self._evaluate(rec)
        rec["exchange_s"] = exchanges
        # payload bytes each site sent this round
        rec["bytes_up"] = {p: n - up_before.get(p, 0) for p, n in link.stats.bytes_up.items()
                           if n - up_before.get(p, 0)}
        rec["duration_s"] = time.perf_counter() - t0
        return rec

    def _secagg(
        self, link: GridLink, party: Any, replies: dict[str, Envelope], r: int,
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

    def _encoded_dim(self) -> int:
        from veil.aggregation import EncodeContext
        from veil.crypto.prg import SecureRng

        zero = np.zeros((1, self.params.numel()), dtype=np.float32)
        ctx = EncodeContext(round=0, site_ids=np.asarray([0]), weights=np.ones(1),
                            rng=SecureRng.fresh(), cohort_size=1)
        enc, _ = self.deploy.pipeline.encode(self.pipe_state, zero, ctx)
        return int(enc.shape[1])

    def _evaluate(self, rec: dict[str, Any]) -> None:
        from veil.federation.runtime import evaluate

        x, y, task = self.test
        rec["test_loss"], rec["test_accuracy"] = evaluate(self.model, self.params, x, y, task)


def serve(grid: Any, context: Any) -> None:
    """The ServerApp's main: read the run config Flower passed and run all rounds.

    Flower run-config keys: ``veil-config`` (path of the veil TOML on the SuperLink's
    machine), ``out-dir`` (run directory), ``stage-timeout``, ``train-timeout``,
    ``nodes-timeout``, ``min-nodes`` (0: ``data.sites``).
    """
    from veil.federation.config import load_config

    rc = context.run_config
    cfg = load_config(str(rc["veil-config"]))
    DeployServer(
        cfg,
        str(rc["out-dir"]),
        stage_timeout_s=float(rc.get("stage-timeout", 30.0)),
        train_timeout_s=float(rc.get("train-timeout", 0.0)) or None,
        nodes_timeout_s=float(rc.get("nodes-timeout", 120.0)),
        min_nodes=int(rc.get("min-nodes", 0)) or None,
    ).run(grid)
