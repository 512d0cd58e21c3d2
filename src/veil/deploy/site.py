"""One site of a deployed run: a :class:`~veil.federation.site.Site` answering the coordinator.

A :class:`SiteRuntime` lives in the site's own process (the site executor beside its
SuperNode, :mod:`veil.deploy.executor`, or the agent, :mod:`veil.deploy.agent`) for the
whole run, so the SecAgg+ party's secrets and the site's
stage state stay in that process's memory between stages and rounds. It is built from the
site's **own copy of the run config** (``config`` in the SuperNode's node config) and its
own data; the coordinator's messages never configure it:

``hello``  → the coordinator's config fingerprint is compared with the site's own; any
            difference (rounds, cohort, stages, privacy targets...) is refused naming the
            keys. The reply: the site's id and example shape (its number of examples only
            if the node config opts in with ``share-example-counts = true``);
``train``  → the round's parameters are checked against the site's own config (round
            order, cohort size, the stages' broadcast state, SecAgg+ n/k/t/bits/dim);
            then local training, the site's ledger, the pipeline's encode side with the
            site's own state and stream, and either the encoded row (plain sum) or the
            first SecAgg+ message (the row is the party's private input);
``stage``  → the SecAgg+ party's next message;
``evaluate`` → after the last round, the final model's metrics on the site's own test
            split (its test file or holdout) — only if the node config opts in with
            ``share-evaluation = true`` (they are statistics of the site's data: its test
            size and accuracy); otherwise the site declines.

Where the data comes from: :mod:`veil.deploy.site_data` (the site's own file through
:func:`veil.data.load_site` with the declared schema, or its part of a bundled set).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from veil.deploy.site_data import SiteData, load_site_data, node_flag
from veil.errors import BudgetExceededError, ConfigError, LocalError
from veil.transport.flower import Envelope
from veil.transport.sidechannels import SideChannels

__all__ = [
    "SiteRuntime", "SiteData", "load_site_data", "node_flag", "state_to_meta", "encoded_dim",
]


def _enrolment(node_config: Mapping[str, Any], site: int) -> tuple[Any, Any]:
    """The roster and this site's signing key (node config ``roster`` + ``identity``; an
    optional ``roster-digest`` pins the roster), or ``(None, None)`` when not enrolled.

    Raises:
        ConfigError: one without the other, unreadable files, or a key the roster does
            not enrol for this site.
        IntegrityError: the roster's digest does not match.
    """
    from veil.crypto.identity import SiteIdentity
    from veil.deploy.parts import load_roster

    has = [k for k in ("roster", "identity") if node_config.get(k)]
    if not has:
        return None, None
    if len(has) != 2:
        raise ConfigError(
            "an enrolled site needs both roster = '/path/roster.json' and identity = "
            "'/path/site-<id>.key' in its node config", key=f"node-config.{has[0]}",
        )
    digest = node_config.get("roster-digest")
    roster = load_roster(str(node_config["roster"]), str(digest) if digest else None)
    identity = SiteIdentity.load(site, str(node_config["identity"]))
    if site not in roster or roster.key_of(site) != identity.public:
        raise ConfigError(f"the roster does not enrol this key as site {site}",
                          key="node-config.identity")
    return roster, identity


class SiteRuntime:
    """A site for one run, built from its own run config and its node config.

    Args:
        node_config: the SuperNode's node config (``config``: the site's copy of the run
            config; where its data is).

    Raises:
        ConfigError, DataError, BudgetExceededError: the site cannot take part.
    """

    def __init__(self, node_config: Mapping[str, Any]) -> None:
        from veil.deploy.parts import fingerprint, site_parts
        from veil.federation.config import load_config
        from veil.federation.server import round_half
        from veil.training import SiteData as Stacked

        if not node_config.get("config"):
            raise ConfigError(
                "the SuperNode's node config needs config = '/path/to/run.toml': the site's "
                "own copy of the run config (a site never takes its rounds from the server)",
                key="node-config.config",
            )
        self.cfg = cfg = load_config(str(node_config["config"]))
        self.fingerprint = fingerprint(cfg)
        data, self.site_id = load_site_data(cfg, node_config)
        self.input_shape = tuple(int(v) for v in data.x.shape[1:])
        self.share_counts = node_flag(node_config, "share-example-counts")
        self.share_evaluation = node_flag(node_config, "share-evaluation")
        self.test = (data.x_test, data.y_test, data.task, data.n_classes)
        parts = site_parts(cfg, self.site_id, data.x, data.y, data.task, data.n_classes)
        self.site, self.trainer, self.pipeline = parts.site, parts.trainer, parts.pipeline
        self.model = parts.model
        self.secure = self.pipeline.summation.name == "secagg"
        self.cohort_size = round_half(cfg.cohort)
        self.init_state = self.pipeline.init()
        # the trainer reads site i's rows at index i and seeds its batches with i: hold
        # this site's data at its own id (other slots hold one placeholder row each)
        slot = np.arange(len(data.y))
        self.data = Stacked(data.x, data.y, [slot[:1]] * self.site_id + [slot])
        self.dim = encoded_dim(self.pipeline, parts.n_params, self.cohort_size)
        self.roster, self.identity = _enrolment(node_config, self.site_id)
        self.party: Any = None
        self.side_channels = SideChannels(site_delay_s=cfg.aggregation.site_delay_s)
        self.last_round = -1
        self.accepted = False

    def __repr__(self) -> str:
        return f"SiteRuntime(site={self.site_id})"

    # ------------------------------------------------------------------ messages
    def handle(self, env: Envelope) -> Envelope | None:
        """Answer one envelope from the server (``None``: nothing to send).

        Raises:
            ConfigError: the coordinator's config or round parameters differ from this
                site's own config (the site refuses the run or the round).
            LocalError, PeerError, AbortError, BudgetExceededError: from training, the
                ledger or the protocol party.
        """
        if env.kind == "hello":
            return self._hello(env)
        if not self.accepted:
            raise ConfigError(f"site {self.site_id}: no accepted run (the hello was refused)")
        if env.kind == "train":
            return self._delayed(self._train(env))
        if env.kind == "stage":
            if self.party is None or self.party.config.round != env.round:
                raise LocalError(f"site {self.site_id}: no protocol party for round {env.round}")
            self.party.receive("server", env.payload)
            return self._delayed(self._from_party(env.round))
        if env.kind == "evaluate":
            return self._evaluate(env)
        raise LocalError(f"site {self.site_id}: unknown message kind {env.kind!r}")

    def _evaluate(self, env: Envelope) -> Envelope:
        """The final model's metrics on this site's own test split (opt-in)."""
        import torch

        from veil.models.metrics import evaluate_model
        from veil.models.params import load_flat_params

        x, y, task, n_classes = self.test
        if not self.share_evaluation or not len(y):
            why = "no test split" if not len(y) else "the site does not share its evaluation"
            return Envelope("declined", env.round, b"", {"site": self.site_id, "why": why})
        params = torch.from_numpy(np.frombuffer(env.payload, dtype=np.float32).copy())
        load_flat_params(self.model, params)  # LocalError: not this run's model size
        metrics = evaluate_model(self.model, x, y, task, n_classes)
        return Envelope("metrics", env.round, b"", {"site": self.site_id,
                                                     "metrics": metrics.to_dict()})

    def _delayed(self, out: Envelope) -> Envelope:
        """``out`` after the site's random send delay (``aggregation.site_delay_s``, CSPRNG):
        when a site answers then says less about how long its work took."""
        import time

        time.sleep(self.side_channels.delay())
        return out

    def _hello(self, env: Envelope) -> Envelope:
        from veil.deploy.parts import config_diff

        theirs = env.meta.get("fingerprint")
        diff = config_diff(self.fingerprint, theirs if isinstance(theirs, dict) else {})
        if diff:
            raise ConfigError(
                f"site {self.site_id} refuses the run: the coordinator's run config differs "
                f"from this site's own in {diff[:8]}; give both the same config",
                key="node-config.config",
            )
        self.accepted = True
        meta: dict[str, Any] = {"site": self.site_id, "input_shape": list(self.input_shape)}
        if self.share_counts:
            meta["n_examples"] = self.site.n_examples
        return Envelope("hello", -1, b"", meta)

    def _refuse(self, what: str, got: Any, want: Any) -> ConfigError:
        return ConfigError(
            f"site {self.site_id} refuses the round: {what} is {got!r}, its own config says "
            f"{want!r}", key=what,
        )

    def _broadcast_state(self, raw: Any) -> Any:
        """The stages' server state of this round, checked against the site's own stages.

        A stage whose state is fixed by the config (a fixed clip, DP-FedAvg's C) must hold
        the site's own value; only an adaptive clip may move (to a positive finite C).
        """
        from veil.aggregation.base import PipelineState
        from veil.aggregation.dp_fedavg import AdaptiveDPFedAvg

        init = self.init_state.transforms
        if raw is None:
            return self.init_state
        if not isinstance(raw, list) or len(raw) != len(init):
            raise self._refuse("pipeline state", raw, [state_to_meta(self.init_state)])
        out: list[Any] = []
        for stage, mine, theirs in zip(self.pipeline.transforms, init, raw):
            if mine is None or theirs is None:
                if mine is not theirs:
                    raise self._refuse(f"state of stage {stage.name}", theirs, None)
                out.append(None)
                continue
            try:
                state = type(mine)(**theirs)
            except TypeError:
                raise self._refuse(f"state of stage {stage.name}", theirs,
                                   dataclasses.asdict(mine)) from None
            if isinstance(stage, AdaptiveDPFedAvg):
                if not all(isinstance(v, float) and math.isfinite(v) and v > 0
                           for v in dataclasses.asdict(state).values()):
                    raise self._refuse(f"state of stage {stage.name}", theirs, "C > 0")
            elif state != mine:
                raise self._refuse(f"state of stage {stage.name}", theirs,
                                   dataclasses.asdict(mine))
            out.append(state)
        return PipelineState(tuple(out))

    def _check_round(self, r: int, meta: Mapping[str, Any]) -> Any:
        if not self.last_round < r < self.cfg.rounds:
            raise self._refuse("round", r, f"after {self.last_round}, below {self.cfg.rounds}")
        if meta.get("cohort_size") != self.cohort_size:
            raise self._refuse("federation.cohort_size", meta.get("cohort_size"),
                               self.cohort_size)
        if self.secure and not isinstance(meta.get("secagg"), Mapping):
            raise self._refuse("aggregation.summation", "plain", "secagg")
        if not self.secure and "secagg" in meta:
            raise self._refuse("aggregation.summation", "secagg", "plain")
        if self.site.ledger is not None:
            nxt = self.site.ledger.next_epsilon()
            target = self.cfg.privacy.target_epsilon
            if nxt > target + 1e-9:
                raise BudgetExceededError(
                    f"site {self.site_id}: round {r} would bring its sample-level ε to "
                    f"{nxt:.3f} > {target:g}; it sits this round out"
                )
        return self._broadcast_state(meta.get("pipeline_state"))

    def _secagg_config(self, r: int, s: Mapping[str, Any], dim: int) -> Any:
        """The round's SecAgg+ parameters: n, k, t, bits and d as the site's own config
        gives them for this cohort; only the public graph seed and session come from the
        coordinator."""
        from veil.federation.config import MIN_SECURE_COHORT

        try:
            ids = tuple(sorted(int(u) for u in s["site_ids"]))
            graph_seed, session = bytes.fromhex(s["graph_seed"]), bytes.fromhex(s["session"])
        except (KeyError, TypeError, ValueError):
            raise self._refuse("secagg parameters", dict(s), "site_ids, graph_seed, session")\
                from None
        n_sites = int(self.cfg.data.sites)
        if (self.site_id not in ids or len(set(ids)) != len(ids)
                or any(not 0 <= u < n_sites for u in ids)):
            raise self._refuse("cohort", list(ids), f"distinct ids in [0, {n_sites}) with "
                               f"{self.site_id}")
        most = n_sites if self.cfg.federation.sampling == "poisson" else self.cohort_size
        if not MIN_SECURE_COHORT <= len(ids) <= most:
            raise self._refuse("cohort size", len(ids), f"{MIN_SECURE_COHORT}..{most}")
        if self.roster is not None:  # enrolled: only the malicious-server mode, this roster
            digest = self.roster.digest().hex()
            if s.get("roster_digest") != digest:
                raise self._refuse("secagg roster", s.get("roster_digest"), digest)
            from veil.deploy.parts import malicious_config

            own = malicious_config(self.pipeline.summation, ids, dim, r, self.roster, session)
        elif s.get("roster_digest") is not None:
            raise self._refuse("secagg roster", s.get("roster_digest"), None)
        else:
            own = self.pipeline.summation.config(np.asarray(ids), dim, r)
            own = dataclasses.replace(own, graph_seed=graph_seed, session=session)
        for key, want in (("dim", own.dim), ("bits", own.bits), ("k", own.k),
                          ("t", own.threshold)):
            if s.get(key) != want:
                raise self._refuse(f"secagg {key}", s.get(key), want)
        return own

    def _train(self, env: Envelope) -> Envelope:
        import torch

        from veil.aggregation import EncodeContext
        from veil.aggregation.base import check_updates
        from veil.federation.site import SiteStreams
        from veil.protocols.secagg import SecAggClient

        r, meta = env.round, env.meta
        broadcast = self._check_round(r, meta)
        scfg = self._secagg_config(r, meta["secagg"], self.dim) if self.secure else None
        self.last_round = r
        site = self.site
        params = torch.from_numpy(np.frombuffer(env.payload, dtype=np.float32).copy())
        ids = np.asarray([self.site_id], dtype=np.int64)
        streams = SiteStreams([site] * (self.site_id + 1))  # only index site_id is read
        update = self.trainer.train(params, self.data, ids, self.cfg.seed, r, streams).numpy()
        if not check_updates(update).all():
            raise LocalError(f"site {self.site_id}: local training produced NaN/inf")
        if site.ledger is not None:
            site.ledger.charge()  # the site's own ledger: charged for every round it trains
        weight = float(site.n_examples) if self.share_counts or self.secure else 1.0
        ctx = EncodeContext(round=r, site_ids=ids, weights=np.asarray([weight]),
                            rngs=[site.stream("encode", r)], cohort_size=self.cohort_size)
        encoded, states, _ = self.pipeline.encode_sites(broadcast, [site.stage_state], update,
                                                        ctx)  # measurements stay here
        site.stage_state = states[0]
        out_meta: dict[str, Any] = {"site": self.site_id}
        if site.epsilon() is not None:
            out_meta["epsilon"] = site.epsilon()
        if scfg is None:
            return Envelope("row", r, np.asarray(encoded[0], dtype=np.float64).tobytes(), out_meta)
        self.party = SecAggClient(scfg, self.site_id, np.asarray(encoded[0]), self.identity)
        self.party.start()
        return self._from_party(r, out_meta)

    def _from_party(self, r: int, meta: Mapping[str, Any] | None = None) -> Envelope:
        out = self.party.outbox()
        payload = b"".join(data for _, data in out[:1])
        return Envelope("stage", r, payload, dict(meta or {"site": self.site_id}))


def state_to_meta(state: Any) -> list[Any]:
    """Broadcast form of a pipeline state (public values: clip norms...)."""
    return [None if s is None else dataclasses.asdict(s) for s in state.transforms]


def encoded_dim(pipeline: Any, n_params: int, cohort_size: int) -> int:
    """Length of an encoded row (what the summation protocol sums)."""
    from veil.federation.server import zero_row

    return int(zero_row(pipeline, n_params, cohort_size).shape[1])
