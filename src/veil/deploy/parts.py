"""The pieces of a deployed run, built on each side with the simulation's own builders.

The coordinator builds a :class:`~veil.federation.server.Server` and every site a
:class:`~veil.federation.site.Site` from *its own copy* of the same run config, with the
pipeline of :func:`veil.federation.build.build_pipeline` (the presets: FedAvg,
DP-FedAvg, distributed DP, quantiser, SecAgg+) and the privacy pieces of
:func:`veil.privacy.build_privacy` — so stages, noise calibration and ledgers are the
code the simulation runs. What differs is only who holds what:

* the coordinator holds the server side: cohorts, decode, central DP noise, the server
  optimiser and the client-level ledger; it never sees a site's data or size;
* a site holds its data (read by :func:`veil.data.load_site` with the declared schema, or
  its part of a bundled set), its trainer, its own stage state and privacy streams and
  its sample-level ledger, calibrated from its own size only.

:func:`fingerprint` is what both sides compare before the first round: the public
projection of the run config (everything but local paths, run names and output places).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from veil.errors import ConfigError

__all__ = [
    "require_flower",
    "check_deployable",
    "fingerprint",
    "config_diff",
    "ServerParts",
    "server_parts",
    "SiteParts",
    "site_parts",
    "malicious_config",
    "load_roster",
]

#: keys that may differ between the coordinator's and a site's copy of the run config
LOCAL_KEYS = ("name", "output_dir", "threads", "policy", "audit")


def require_flower() -> None:
    """Raise a clear error when Flower (the ``veil[flower]`` extra) is not installed.

    Raises:
        ConfigError: ``flwr`` cannot be imported.
    """
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise ConfigError(
            "federation.transport = 'flower' needs Flower on every machine: "
            "pip install 'veil[flower]' (from a checkout: pip install -e '.[flower]')",
            key="federation.transport",
        ) from None


def check_deployable(cfg: Any) -> None:
    """Refuse configs a Flower deployment cannot run as configured.

    Raises:
        ConfigError: ``federation.transport`` is not ``"flower"``, simulated dropouts or
            deadlines are set, or the data is a file only the simulation machine has.
    """
    f = cfg.federation
    if f.transport != "flower":
        raise ConfigError(
            f"this config runs in simulation (federation.transport = {f.transport!r}); set "
            "federation.transport = 'flower' to deploy it",
            key="federation.transport",
        )
    if f.dropout_rate or f.deadline_s is not None:
        key = "federation.dropout_rate" if f.dropout_rate else "federation.deadline_s"
        raise ConfigError(
            f"{key} simulates dropouts; a deployment has real ones (each stage's deadline is "
            "veil deploy run --stage-timeout): leave it unset",
            key=key,
        )
    if cfg.aggregation.compression != "none":  # the Flower messages carry dense rows
        raise ConfigError("aggregation.compression runs in simulation only (a deployment "
                          "sends dense updates); leave it 'none'", key="aggregation.compression")
    if cfg.data.dataset in ("csv", "fashion_mnist") and not cfg.data.files:
        raise ConfigError(
            "a deployed site reads its own file: list the sites' files in data.files with "
            "data.schema (docs/own-data.md), or use a bundled data set",
            key="data.dataset",
        )


def fingerprint(cfg: Any) -> dict[str, Any]:
    """The public part of the run config both sides must agree on (JSON).

    Site file paths, names and output places are local; everything that shapes a round
    (rounds, cohort, stages, bits, privacy targets, the schema...) is in it.
    """
    d = cfg.model_dump(mode="json")
    for k in LOCAL_KEYS:
        d.pop(k, None)
    files = d.get("data", {}).get("files")
    if files:
        d["data"]["files"] = [
            {k: v for k, v in e.items() if k not in ("path", "test", "name")} for e in files
        ]
    return d


def config_diff(mine: Any, theirs: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two :func:`fingerprint` dicts."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        out: list[str] = []
        for k in sorted(set(mine) | set(theirs)):
            out += config_diff(mine.get(k), theirs.get(k), f"{prefix}{k}.")
        return out
    return [] if mine == theirs else [prefix.rstrip(".") or "config"]


def _plan(cfg: Any, sizes: np.ndarray) -> Any:
    from veil.federation.simulation import make_plan
    from veil.training import LocalConfig

    lc = cfg.local
    local = LocalConfig(lc.epochs, lc.batch_size, lc.lr, lc.momentum, lc.weight_decay)
    return make_plan(sizes, cfg.rounds, cfg.cohort, cfg.federation.sampling, local), local


def _privacy(cfg: Any, privacy: Any, plan: Any, model: Any, task: str, local: Any) -> Any:
    """``build_privacy`` with the run's secure sum (as :func:`build_federation` calls it)."""
    from veil.privacy import SecureSum, build_privacy

    a = cfg.aggregation
    secure = (
        SecureSum(a.bits, a.quantize_range, a.expected_dropout, a.corrupt_fraction)
        if a.summation == "secagg" else None
    )
    return build_privacy(privacy, plan, model, task, local, cfg.seed, secure_sum=secure)


@dataclass
class ServerParts:
    """The coordinator's side of a deployed run.

    Attributes:
        server: the :class:`~veil.federation.server.Server` (pipeline, cohorts, optimiser).
        model: the architecture (for evaluation).
        hooks: the client-level privacy hook (empty without client-level DP).
        plan: the run's public plan (site sizes unknown to the server: placeholders).
        noise: calibrated client-level noise multipliers, for the record.
    """

    server: Any
    model: Any
    hooks: tuple[Any, ...]
    plan: Any
    noise: dict[str, Any]


def server_parts(cfg: Any, input_shape: tuple[int, ...], n_classes: int, task: str) -> ServerParts:
    """Build the coordinator's :class:`Server` and client-level ledger from ``cfg``.

    Raises:
        ConfigError, BudgetExceededError: from the pipeline and the privacy layer.
    """
    from veil.federation.build import build_pipeline
    from veil.federation.server import Server
    from veil.federation.server_opt import make_server_optimizer
    from veil.models import build_model
    from veil.models.params import flat_params

    check_deployable(cfg)
    model = build_model(cfg.model.name, input_shape, n_classes, cfg.model.hidden, seed=cfg.seed)
    # the server knows no site's size: sample-level DP is calibrated and accounted at the
    # sites, so the server's privacy pieces are the client-level ones only
    plan, local = _plan(cfg, np.ones(cfg.data.sites, dtype=np.int64))
    p = cfg.privacy
    chain, hooks, noise = None, (), {}
    if p.enabled and p.client_on:
        server_privacy = p.model_copy(
            update={"sample_level": p.sample_level.model_copy(update={"enabled": False})}
        )
        setup = _privacy(cfg, server_privacy, plan, model, task, local)
        chain, hooks, noise = setup.chain, tuple(setup.hooks), dict(setup.noise)
    pipeline = build_pipeline(cfg, chain)
    f = cfg.federation
    server = Server(
        pipeline,
        make_server_optimizer(f.server_optimizer, f.server_lr, f.server_momentum),
        flat_params(model),
        cfg.data.sites,
        cfg.cohort,
        f.sampling,
        cfg.seed,
        secure_rng=bool(p.secure_rng) if p.enabled else True,
        secret_cohorts=p.client_on and p.secure_rng,
    )
    return ServerParts(server, model, hooks, plan, noise)


@dataclass
class SiteParts:
    """One site's side of a deployed run.

    Attributes:
        site: the :class:`~veil.federation.site.Site` (data, streams, stage state, ledger).
        trainer: its local trainer (DP-SGD when sample-level DP is on).
        pipeline: the same pipeline the coordinator built (the site runs its encode side).
        noise: the site's calibrated noise multipliers (kept at the site).
        n_params: the model's number of parameters.
        model: the architecture (the site evaluates the final model on its own test data).
    """

    site: Any
    trainer: Any
    pipeline: Any
    noise: dict[str, Any]
    n_params: int
    model: Any = None


def site_parts(
    cfg: Any, site_id: int, x: np.ndarray, y: np.ndarray, task: str, n_classes: int
) -> SiteParts:
    """Build site ``site_id``'s :class:`Site`, trainer and pipeline from its own config.

    DP-SGD is calibrated from this site's size alone (as the simulation calibrates a site
    of that size) and its ledger vets δ and the planned ε before the first round.

    Raises:
        ConfigError, BudgetExceededError: the site cannot take part as configured.
    """
    from veil.federation.build import build_pipeline
    from veil.federation.site import Site, site_streams
    from veil.models import build_model
    from veil.models.params import flat_params
    from veil.training import Trainer

    check_deployable(cfg)
    model = build_model(
        cfg.model.name, tuple(x.shape[1:]), n_classes, cfg.model.hidden, seed=cfg.seed
    )
    plan, local = _plan(cfg, np.full(cfg.data.sites, len(y), dtype=np.int64))
    trainer: Any = Trainer(model, task, local)
    chain, ledger, noise = None, None, {}
    p = cfg.privacy
    if p.enabled:
        setup = _privacy(cfg, p, plan, model, task, local)
        setup.hook.before_run(plan)  # δ against this site's size, planned ε vs the target
        trainer = setup.trainer or trainer
        chain, noise = setup.chain, dict(setup.noise)
        ledger = setup.site_ledgers[site_id] if setup.site_ledgers else None
    pipeline = build_pipeline(cfg, chain)
    secure_rng = bool(p.secure_rng) if p.enabled else True
    site = Site(site_id, x, y, site_streams(secure_rng, cfg.seed), pipeline.init_site(), ledger)
    return SiteParts(site, trainer, pipeline, noise, int(flat_params(model).numel()), model)


def malicious_config(
    summation: Any, site_ids: Any, dim: int, round: int, roster: Any, session: bytes
) -> Any:
    """SecAgg+'s round parameters in the malicious-server mode, for a deployment.

    The simulation's :meth:`SecAggSum.config` holds every site's identity; a deployed
    coordinator and each site hold only the pinned roster (public keys), so the round's
    (k, t) are chosen here with the same rules: ``choose_k(model="malicious")``, or for a
    configured k the threshold above (k + c)/2, then ``check_malicious``. The graph seed
    comes from the signed advertisements (the protocol derives it), not from the server.

    Raises:
        InsecureParametersError: (k, t) do not hold against a malicious server.
    """
    from veil.protocols.secagg import SecAggConfig, choose_k
    from veil.protocols.secagg.graph import check_malicious, corrupt_bound

    ids = tuple(sorted(int(i) for i in site_ids))
    n = len(ids)
    if summation.k is None:
        gp = choose_k(n, summation.dropout, summation.corrupt, model="malicious")
        k, t = gp.k, gp.t
    else:
        k = min(int(summation.k), n - 1)
        t = (k + corrupt_bound(n, k, summation.corrupt)) // 2 + 1
    if summation.threshold is not None:
        t = int(summation.threshold)
    check_malicious(n, k, t, summation.corrupt)
    return SecAggConfig(round, ids, int(dim), summation.bits, k, t, bytes(32), roster, session,
                        pad_messages=summation.pad_messages)


def load_roster(path: str, pinned_digest: str | None = None) -> Any:
    """The enrolled sites' roster file (``veil identity roster``), digest checked.

    Raises:
        ConfigError: unreadable or malformed file.
        IntegrityError: the digest does not match (or is not the pinned one).
    """
    from pathlib import Path

    from veil.crypto.identity import Roster

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the roster {path}: {exc}", key="roster") from None
    return Roster.from_json(text, pinned_digest)
