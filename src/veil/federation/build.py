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

from veil.aggregation import Clip, Pipeline, PlainSum, Transform, UniformMean, WeightedMean
from veil.data import Dataset, load_dataset, partition
from veil.federation.config import RunConfig, config_hash
from veil.federation.hooks import RunHook
from veil.federation.runtime import Federation, make_plan
from veil.federation.server_opt import make_server_optimizer
from veil.models import build_model
from veil.training import LocalConfig, Trainer

__all__ = ["build_federation", "load_data"]


def load_data(cfg: RunConfig) -> Dataset:
    """Load the configured data set (seeded split)."""
    d = cfg.data
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
) -> Federation:
    """Everything a run needs, from a validated config.

    Args:
        cfg: the run config.
        hooks: extra hooks (audits); the privacy ledger is added from ``cfg.privacy``.
        dataset: use this data instead of ``cfg.data`` (it is still split per ``cfg.data``).
        model: use this model instead of ``cfg.model``.
        on_round: per-round callback (progress).
    """
    ds = dataset if dataset is not None else load_data(cfg)
    if model is None:
        model = build_model(
            cfg.model.name, ds.input_shape, ds.n_classes, cfg.model.hidden, seed=cfg.seed
        )
    parts = partition(
        ds.y_train if ds.task == "classification" else np.zeros(len(ds.y_train), dtype=np.int64),
        cfg.data.sites,
        cfg.data.partition
        if ds.task == "classification" or cfg.data.partition != "dirichlet"
        else "iid",
        cfg.data.alpha,
        seed=cfg.seed,
    )
    lc = cfg.local
    local = LocalConfig(lc.epochs, lc.batch_size, lc.lr, lc.momentum, lc.weight_decay)
    trainer: Trainer = Trainer(model, ds.task, local)
    transforms: list[Transform[Any]] = []
    all_hooks: list[RunHook] = list(hooks)
    secure_rng = True
    dp_transforms: list[Transform[Any]] = []
    noise: dict[str, Any] = {}
    post_quantize: list[Transform[Any]] = []
    quant = None
    if cfg.privacy.enabled:
        from veil.privacy import build_privacy

        plan = make_plan(
            np.asarray([len(p) for p in parts]), cfg.rounds, cfg.cohort,
            cfg.federation.sampling, local,
        )
        quant = _secure_sum(cfg)[1] if cfg.aggregation.secure_aggregation else None
        setup = build_privacy(
            cfg.privacy, plan, model, ds.task, local, cfg.seed,
            quantizer=quant, expected_dropout=cfg.aggregation.expected_dropout,
        )
        if setup.trainer is not None:
            trainer = setup.trainer
        dp_transforms = list(setup.transforms)
        post_quantize = list(setup.post_quantize)
        if setup.quantizer is not None:
            quant = setup.quantizer
        noise = dict(setup.noise)
        all_hooks = list(setup.hooks) + all_hooks
        secure_rng = bool(getattr(cfg.privacy, "secure_rng", True))
    if cfg.aggregation.clip_norm is not None and not dp_transforms:
        transforms.append(Clip(cfg.aggregation.clip_norm))
    if dp_transforms:
        transforms.extend(dp_transforms)
    elif cfg.aggregation.secure_aggregation or cfg.privacy.enabled:
        # Unweighted: with SecAgg a data-dependent weight column would need its own range;
        # with DP, weighting by a site's example count would make the aggregate depend on
        # private data outside the DP mechanism (add/remove-one changes the count).
        transforms.append(UniformMean())
    else:
        transforms.append(WeightedMean())
    summation: Any = PlainSum()
    if cfg.aggregation.secure_aggregation:
        summation, quant_stage = _secure_sum(cfg)
        transforms.append(quant if quant is not None else quant_stage)
        transforms.extend(post_quantize)
    pipeline = Pipeline(transforms, summation)
    fed = Federation(
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
    )
    fed.fingerprint = config_hash(cfg)
    fed.privacy_noise = noise
    return fed


def _secure_sum(cfg: RunConfig) -> tuple[Any, Transform[Any]]:
    from veil.aggregation.quantize import Quantize
    from veil.aggregation.secagg import SecAggSum

    a = cfg.aggregation
    quant = Quantize(clip=a.quantize_range, bits=a.bits)
    summation = SecAggSum(
        bits=a.bits,
        k=a.neighbours,
        dropout=a.expected_dropout,
        corrupt=a.corrupt_fraction,
        stage_deadline_s=a.stage_deadline_s,
    )
    return summation, quant
