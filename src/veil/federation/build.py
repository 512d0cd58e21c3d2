"""From a validated :class:`RunConfig` to the objects a run is made of.

:func:`load_data` loads the configured data set (seeded split), :func:`build_federation`
the model, sites' split, trainer, aggregation pipeline, server optimiser and privacy
ledger. Running the whole job (record, model file, audit log) is :func:`veil.app.train`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from veil.aggregation import Chain, Pipeline, PlainSum, presets
from veil.data import Dataset, FederatedData, load_dataset, partition
from veil.federation.config import RunConfig, config_hash
from veil.federation.hooks import RunHook
from veil.federation.simulation import Simulation, make_plan
from veil.federation.server_opt import make_server_optimizer
from veil.models import build_model
from veil.training import LocalConfig, Trainer

__all__ = ["build_federation", "build_pipeline", "load_data", "load_site_files"]


def load_site_files(cfg: RunConfig) -> FederatedData | None:
    """Each site's own file (``data.files``), read and preprocessed per site; else None."""
    if not cfg.data.files:
        return None
    from veil.data import load_sites

    return load_sites(cfg.data.files, cfg.data.site_schema, seed=cfg.seed)  # type: ignore[arg-type]


def load_data(cfg: RunConfig) -> Dataset:
    """Load the configured data set (seeded split); with ``data.files``, the sites' rows
    side by side (each site read and preprocessed on its own)."""
    d = cfg.data
    site_files = load_site_files(cfg)
    if site_files is not None:
        return site_files.to_arrays().dataset
    kwargs: dict[str, Any] = {}
    if d.dataset in ("digits", "breast_cancer", "diabetes"):
        kwargs = {"test_fraction": d.test_fraction, "seed": cfg.seed}
        if d.dataset == "digits":
            kwargs["image"] = d.image
    elif d.dataset == "fashion_mnist":
        kwargs = {"path": d.path, "flat": not d.image}
    elif d.dataset == "csv":
        kwargs = {
            "path": d.path,
            "label": d.label,
            "task": d.task,
            "test_fraction": d.test_fraction,
            "seed": cfg.seed,
        }
    ds = load_dataset(d.dataset, **kwargs)
    if d.limit is not None and d.limit < len(ds.y_train):
        ds = Dataset(
            ds.name,
            ds.x_train[: d.limit],
            ds.y_train[: d.limit],
            ds.x_test,
            ds.y_test,
            ds.task,
            ds.n_classes,
        )
    return ds


def build_federation(
    cfg: RunConfig,
    hooks: Sequence[RunHook] = (),
    dataset: Dataset | None = None,
    model: torch.nn.Module | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    parts: Sequence[np.ndarray] | None = None,
) -> Simulation:
    """The simulation of a run (server, sites, trainer, pipeline, ledger) from a config.

    Args:
        cfg: the run config.
        hooks: extra hooks (audits); the privacy ledger is added from ``cfg.privacy``.
        dataset: use this data instead of ``cfg.data`` (it is still split per ``cfg.data``).
        model: use this model instead of ``cfg.model``.
        on_round: per-round callback (progress).
        parts: each site's row indices in ``dataset`` (instead of splitting it per
            ``cfg.data``); taken from ``data.files`` when those are configured.
    """
    if parts is None and dataset is None and cfg.data.files:
        arrays = load_site_files(cfg).to_arrays()  # type: ignore[union-attr]
        dataset, parts = arrays.dataset, arrays.train_parts
    ds = dataset if dataset is not None else load_data(cfg)
    if model is None:
        model = build_model(
            cfg.model.name, ds.input_shape, ds.n_classes, cfg.model.hidden, seed=cfg.seed
        )
    if parts is None:
        parts = partition(
            ds.y_train if ds.task == "classification" else np.zeros(len(ds.y_train), np.int64),
            cfg.data.sites,
            cfg.data.partition
            if ds.task == "classification" or cfg.data.partition != "dirichlet"
            else "iid",
            cfg.data.alpha,
            seed=cfg.seed,
        )
    lc = cfg.local
    # buffered: every site may be in every applied buffer (no amplification, docs/async.md)
    buffered = cfg.federation.mode == "buffered"
    local = LocalConfig(lc.epochs, lc.batch_size, lc.lr, lc.momentum, lc.weight_decay)
    trainer: Trainer = Trainer(model, ds.task, local)
    all_hooks: list[RunHook] = list(hooks)
    secure_rng = True
    noise: dict[str, Any] = {}
    dp_chain: Chain | None = None
    site_ledgers: tuple[Any, ...] = ()
    if cfg.privacy.enabled:
        from veil.privacy import SecureSum, build_privacy

        plan = make_plan(
            np.asarray([len(p) for p in parts]), cfg.rounds,
            float(len(parts)) if buffered else cfg.cohort,
            cfg.federation.sampling, local,
        )
        a = cfg.aggregation
        secure = (
            SecureSum(a.bits, a.quantize_range, a.expected_dropout, a.corrupt_fraction)
            if a.summation in ("secagg", "ckks") else None
        )
        setup = build_privacy(cfg.privacy, plan, model, ds.task, local, cfg.seed,
                              secure_sum=secure)
        if setup.trainer is not None:
            trainer = setup.trainer
        dp_chain = setup.chain
        if buffered and dp_chain is not None:
            from veil.federation.buffered import buffered_dp_chain

            dp_chain = buffered_dp_chain(
                cfg.privacy.client_level.clip_norm, setup.noise["client_noise_multiplier"],
                int(cfg.federation.buffered.buffer_size or 1),
            )
        site_ledgers = setup.site_ledgers
        noise = dict(setup.noise)
        all_hooks = list(setup.hooks) + all_hooks
        secure_rng = bool(getattr(cfg.privacy, "secure_rng", True))
    pipeline = build_pipeline(cfg, dp_chain, max_weight=max(len(p) for p in parts),
                              dim=sum(p.numel() for p in model.parameters()))
    runner: Any = Simulation
    extra: dict[str, Any] = {}
    if buffered:
        from veil.federation.buffered import BufferedSimulation

        runner, extra = BufferedSimulation, {"buffered": cfg.federation.buffered}
    fed = runner(
        model,
        ds,
        parts,
        pipeline,
        trainer,
        make_server_optimizer(
            cfg.federation.server_optimizer,
            cfg.federation.server_lr,
            cfg.federation.server_momentum,
        ),
        rounds=cfg.rounds,
        seed=cfg.seed,
        cohort=cfg.cohort,
        sampling=cfg.federation.sampling,
        dropout_rate=cfg.federation.dropout_rate,
        deadline_s=cfg.federation.deadline_s
        if cfg.federation.deadline_s is not None
        else float("inf"),
        latency_s=cfg.federation.latency_s,
        latency_spread=cfg.federation.latency_spread,
        hooks=all_hooks,
        run_dir=cfg.run_dir(),
        secure_rng=secure_rng,
        eval_every=cfg.federation.eval_every,
        on_round=on_round,
        # client-level DP claims amplification by sampling: cohorts must be secret
        secret_cohorts=cfg.privacy.client_on and cfg.privacy.secure_rng,
        dp_mechanism=cfg.privacy.client_level.mechanism if cfg.privacy.client_on else None,
        # amplification must hold against a reader of the record: only counts, unless the
        # user keeps the cohorts (and the ledger then charges without amplification)
        record_cohorts=not cfg.privacy.hide_cohorts,
        debug_unnoised=cfg.privacy.enabled and cfg.privacy.debug_unnoised_statistics,
        **extra,
    )
    for site, ledger in zip(fed.sites, site_ledgers):
        site.ledger = ledger  # each site holds its own sample-level ledger
    fed.fingerprint = config_hash(cfg)
    fed.privacy_noise = noise
    return fed


def build_pipeline(
    cfg: RunConfig,
    dp_chain: Chain | None = None,
    max_weight: float | None = None,
    dim: int | None = None,
) -> Pipeline:
    """The run's pipeline: the client-level DP chain (or the mean) before the summation.

    Without client-level DP the chain is :func:`~veil.aggregation.presets.fedavg`:
    example-weighted per ``aggregation.weighted`` (default: weighted for a plain sum,
    unweighted under secure aggregation, where a site's count is private; never under DP,
    where it would change the aggregate outside the mechanism). Weighted under SecAgg+,
    each site sends ``w·u`` and ``w`` in one masked vector, ``w`` scaled by the public
    bound ``aggregation.max_weight`` (else ``max_weight``, the largest site's count) into
    the quantiser's range. A float chain in front of a secure sum gets its quantiser
    (:func:`~veil.aggregation.presets.for_secure_sum`).

    Raises:
        ConfigError: stages that do not fit each other or the summation.
    """
    a = cfg.aggregation
    chain = dp_chain
    if chain is None:
        weighted = a.weighted_mean and not cfg.privacy.enabled
        bound = None
        if weighted and a.summation == "secagg":
            bound = a.max_weight or max_weight
            if bound is None:
                from veil.errors import ConfigError

                raise ConfigError(
                    "a weighted mean under secagg needs a public bound on a site's example "
                    "count; set aggregation.max_weight", key="aggregation.max_weight",
                )
        chain = presets.fedavg(weighted=weighted, clip_norm=a.clip_norm,
                               max_weight=None if bound is None else float(bound),
                               weight_range=a.quantize_range)
    summation: Any = PlainSum()
    if a.compression != "none":  # aggregation.compression (docs/compression.md)
        from veil.aggregation.compression import compressed

        most_sites = cfg.data.sites if cfg.federation.sampling == "poisson" else round(cfg.cohort)
        chain, payload_sum = compressed(
            chain, a.compression, dim=dim, ratio=a.compression_ratio, bits=a.compression_bits,
            error_feedback=a.error_feedback, secure=a.secure, client_dp=dp_chain is not None,
            seed=cfg.seed, quantize_range=a.quantize_range, cohort_bound=int(most_sites),
        )
        summation = payload_sum or summation
    if a.summation == "ckks" or a.strong_summation is not None:
        _simulation_only(cfg)
    if a.summation == "secagg":
        from veil.aggregation.secagg import SecAggSum

        chain = presets.for_secure_sum(chain, a.bits, a.quantize_range)
        summation = SecAggSum(
            bits=chain.output.bits or a.bits,  # a compressed chain may bring its own ring
            k=a.neighbours,
            dropout=a.expected_dropout,
            corrupt=a.corrupt_fraction,
            stage_deadline_s=a.stage_deadline_s,
            fixed_deadlines=a.fixed_deadlines,
            pad_messages=a.pad_messages,
            site_delay_s=a.site_delay_s,
        )
    elif a.summation == "ckks":
        from veil.aggregation.ckks_sum import CkksSum

        chain = presets.for_secure_sum(chain, a.bits, a.quantize_range)
        # parameters sized for the largest sum: the cohort (every site under Poisson)
        most = cfg.data.sites if cfg.federation.sampling == "poisson" else round(cfg.cohort)
        summation = CkksSum(bits=chain.output.bits or a.bits, max_sites=max(1, int(most)))
    if a.strong_summation is not None:
        from veil.aggregation.tiered import TieredSum

        # the stronger tier's pipeline; both tiers sum the chain it needs
        strong_agg = a.model_copy(update={"summation": a.strong_summation,
                                          "strong_summation": None})
        strong = build_pipeline(cfg.model_copy(update={"aggregation": strong_agg}), dp_chain,
                                max_weight)
        chain = strong.chain
        summation = TieredSum(summation, strong.summation, a.strong_every,
                              cfg.rounds - 1 if a.strong_final else None)
    defences = a.defences()
    if defences.any:  # robust rule, anomaly screen, norm bound, aggregate check
        from dataclasses import replace

        from veil.aggregation.defences import defended_pipeline

        # one quantisation level of the secure sum (Quantize, margin 2, cohort-sized)
        step = a.quantize_range * 2.0 * cfg.cohort / (2 ** (a.bits - 1) - 1) if a.secure else 0.0
        return defended_pipeline(chain, summation, replace(defences, step=step))
    return Pipeline(chain, summation)


def _simulation_only(cfg: RunConfig) -> None:
    """CKKS and tiered summations run in the simulation only (deploy has no roles for them).

    Raises:
        ConfigError: ``federation.transport`` is not ``"simulation"``.
    """
    if cfg.federation.transport != "simulation":
        from veil.errors import ConfigError

        a = cfg.aggregation
        key = "aggregation.summation" if a.summation == "ckks" else "aggregation.strong_summation"
        raise ConfigError(
            "CKKS and tiered summations run in simulation only (federation.transport = "
            "'simulation'); a deployment would fall back to a plain sum: use "
            "aggregation.summation = 'secagg'",
            key=key,
        )
