"""One site of a deployed run: its own data, trainer, encode side, protocol party and ledger.

A :class:`SiteRuntime` lives in the site's own process (the agent beside its SuperNode,
:mod:`veil.deploy.agent`) for the whole run, so the SecAgg+ party's secrets stay in that
process's memory between stages. It answers the server's envelopes:

``hello``  → the site's id (and its number of examples only if the SuperNode's node config
            opts in with ``share-example-counts = true``);
``train``  → local training from the broadcast parameters, the pipeline's encode side on
            this one row, then either the encoded row (plain sum) or the first SecAgg+
            message (the row is the party's private input and never leaves unmasked);
``stage``  → the SecAgg+ party's next message.

Where the data comes from (the SuperNode's ``--node-config``):

* ``data = "/path/site.csv"`` — the site's own CSV file (label column from the run config's
  ``data.label``, or ``label = "..."`` in the node config); its training split is used;
* ``dataset = "digits"`` (or another bundled set) with ``partition-id = i`` — the bundled
  set, partitioned exactly as the simulation of the same config partitions it, part ``i``.

``partition-id`` is also the site's public id (its SecAgg+ party name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from veil.errors import ConfigError, DataError, LocalError
from veil.transport.flower import Envelope

__all__ = ["SiteRuntime", "load_site_data", "node_flag"]

BUNDLED = ("digits", "breast_cancer", "diabetes")


def node_flag(node_config: Mapping[str, Any], key: str) -> bool:
    """A boolean node-config value (``true``/``1``/``yes``)."""
    v = node_config.get(key, False)
    return v is True or str(v).lower() in ("1", "true", "yes")


def load_site_data(cfg: Any, node_config: Mapping[str, Any]) -> tuple[Any, int]:
    """This site's training data (a :class:`~veil.data.Dataset`) and its site id.

    Raises:
        ConfigError: the node config names no data, or a partition id out of range.
        DataError: the file cannot be read.
    """
    from veil.data import Dataset, load_csv, partition

    if "partition-id" not in node_config:
        raise ConfigError(
            "the SuperNode's node config needs partition-id = <this site's id>",
            key="node-config.partition-id",
        )
    site = int(node_config["partition-id"])
    if "data" in node_config:
        label = str(node_config.get("label") or cfg.data.label or "")
        if not label:
            raise ConfigError(
                "a site's CSV needs a label column: set data.label in the run config or "
                'label = "..." in the node config',
                key="node-config.label",
            )
        ds = load_csv(
            str(node_config["data"]), label, cfg.data.task, cfg.data.test_fraction, cfg.seed
        )
        return ds, site
    name = str(node_config.get("dataset", cfg.data.dataset))
    if name not in BUNDLED:
        raise ConfigError(
            f"node config names no data: set data = '/path/to/site.csv', or dataset = one of "
            f"{list(BUNDLED)} with partition-id",
            key="node-config.data",
        )
    from veil.federation import load_data

    full = load_data(cfg.model_copy(update={"data": cfg.data.model_copy(update={"dataset": name})}))
    n = int(node_config.get("num-partitions", cfg.data.sites))
    if not 0 <= site < n:
        raise ConfigError(f"partition-id {site} not in [0, {n})", key="node-config.partition-id")
    labels = (
        full.y_train
        if full.task == "classification"
        else np.zeros(len(full.y_train), dtype=np.int64)
    )
    scheme = cfg.data.partition
    if full.task != "classification" and scheme == "dirichlet":
        scheme = "iid"
    part = partition(labels, n, scheme, cfg.data.alpha, seed=cfg.seed)[site]
    if len(part) == 0:
        raise DataError(f"partition {site} of {name} is empty")
    ds = Dataset(
        full.name, full.x_train[part], full.y_train[part], full.x_test[:0], full.y_test[:0],
        full.task, full.n_classes,
    )
    return ds, site


class SiteRuntime:
    """A site for one run, built from the run config and the SuperNode's node config.

    Args:
        cfg: the run's :class:`~veil.federation.RunConfig` (sent by the server).
        node_config: the SuperNode's node config (where this site's data is).

    Raises:
        ConfigError, DataError, BudgetExceededError: the site cannot take part.
    """

    def __init__(self, cfg: Any, node_config: Mapping[str, Any]) -> None:
        from veil.deploy.parts import build_pipeline, site_trainer
        from veil.training import SiteData
        from veil.models import build_model

        self.cfg = cfg
        ds, self.site_id = load_site_data(cfg, node_config)
        self.n_examples = len(ds.y_train)
        self.share_counts = node_flag(node_config, "share-example-counts")
        model = build_model(
            cfg.model.name, ds.input_shape, ds.n_classes, cfg.model.hidden, seed=cfg.seed
        )
        self.trainer, self.privacy = site_trainer(cfg, model, ds.task, self.n_examples)
        self.deploy = build_pipeline(cfg)
        # the trainer reads site i's rows at index i and seeds its batches with i: hold
        # this site's data at its own id (other slots hold one placeholder row each)
        slot = np.arange(self.n_examples)
        parts = [slot[:1]] * self.site_id + [slot]
        self.data = SiteData(ds.x_train, ds.y_train, parts)
        self.party: Any = None
        self.epsilon: float | None = None

    def __repr__(self) -> str:
        return f"SiteRuntime(site={self.site_id})"

    # ------------------------------------------------------------------ messages
    def handle(self, env: Envelope) -> Envelope | None:
        """Answer one envelope from the server (``None``: nothing to send).

        Raises:
            LocalError, PeerError, AbortError: from training or the protocol party.
        """
        if env.kind == "hello":
            meta: dict[str, Any] = {"site": self.site_id}
            if self.share_counts:
                meta["n_examples"] = self.n_examples
            return Envelope("hello", -1, b"", meta)
        if env.kind == "train":
            return self._train(env)
        if env.kind == "stage":
            if self.party is None or self.party.config.round != env.round:
                raise LocalError(f"site {self.site_id}: no protocol party for round {env.round}")
            self.party.receive("server", env.payload)
            return self._from_party(env.round)
        raise LocalError(f"site {self.site_id}: unknown message kind {env.kind!r}")

    def _train(self, env: Envelope) -> Envelope:
        import torch

        from veil.aggregation import EncodeContext
        from veil.aggregation.base import PipelineState, check_updates
        from veil.privacy.plan import RoundInfo
        from veil.protocols.secagg import SecAggClient, SecAggConfig

        r, meta = env.round, env.meta
        params = torch.from_numpy(np.frombuffer(env.payload, dtype=np.float32).copy())
        ids = np.asarray([self.site_id], dtype=np.int64)
        update = self.trainer.train(params, self.data, ids, self.cfg.seed, r).numpy()
        if not check_updates(update).all():
            raise LocalError(f"site {self.site_id}: local training produced NaN/inf")
        if self.privacy is not None:
            self.privacy.after_round(
                RoundInfo(round=r, cohort=np.asarray([0]), survivors=np.asarray([0]),
                          dp_events=(), measurements={})
            )
            self.epsilon = float(self.privacy.epsilon_per_site()[0])
        pipe = self.deploy.pipeline
        state = _state_from_meta(pipe.init(), meta.get("pipeline_state"))
        weight = float(self.n_examples) if self.share_counts else 1.0
        ctx = EncodeContext(
            round=r,
            site_ids=ids,
            weights=np.asarray([weight]),
            rng=_site_rng(self.cfg, r, self.site_id),
            cohort_size=int(meta["cohort_size"]),
        )
        encoded, _ = pipe.encode(PipelineState(state), update, ctx)  # measurements stay here
        out_meta: dict[str, Any] = {"site": self.site_id}
        if self.epsilon is not None:
            out_meta["epsilon"] = self.epsilon
        if not self.deploy.secure:
            return Envelope("row", r, np.asarray(encoded[0], dtype=np.float64).tobytes(), out_meta)
        s = meta["secagg"]
        scfg = SecAggConfig(
            r, tuple(int(u) for u in s["site_ids"]), int(s["dim"]), int(s["bits"]),
            int(s["k"]), int(s["t"]), bytes.fromhex(s["graph_seed"]),
        )
        self.party = SecAggClient(scfg, self.site_id, np.asarray(encoded[0]))
        self.party.start()
        return self._from_party(r, out_meta)

    def _from_party(self, r: int, meta: Mapping[str, Any] | None = None) -> Envelope:
        out = self.party.outbox()
        payload = b"".join(data for _, data in out[:1])
        return Envelope("stage", r, payload, dict(meta or {"site": self.site_id}))


def _site_rng(cfg: Any, r: int, site: int) -> Any:
    """This site's privacy randomness for round ``r`` (fresh OS entropy unless the run
    asks for reproducible seed-derived streams)."""
    from veil.crypto.prg import SecureRng

    if cfg.privacy.secure_rng:
        return SecureRng.fresh()
    return SecureRng.from_seed(cfg.seed, f"deploy/round{r}/site{site}")


def state_to_meta(state: Any) -> list[Any]:
    """Broadcast form of a pipeline state (public values: clip norms...)."""
    return [None if s is None else dataclasses.asdict(s) for s in state.transforms]


def _state_from_meta(init: Any, raw: Any) -> tuple[Any, ...]:
    if raw is None:
        return tuple(init.transforms)
    if len(raw) != len(init.transforms):
        raise LocalError("pipeline state does not match this site's pipeline")
    return tuple(
        s if r is None or s is None else type(s)(**r) for s, r in zip(init.transforms, raw)
    )
