"""The pieces of a deployed run, built from a veil :class:`RunConfig` on each side.

The server and every site build the *same* aggregation pipeline from the same config (the
server needs its decode side, a site its encode side); the model architecture and its
seeded initial parameters are the same everywhere. Nothing here touches a site's data:
the server never sees a site's size, and a site calibrates its own DP-SGD noise from its
own size only (:func:`site_trainer`).

Supported over Flower today: plain FedAvg (``Clip``, ``WeightedMean`` / ``UniformMean``
over ``PlainSum``), SecAgg+ (``Quantize`` + ``SecAggSum``) and sample-level DP-SGD at the
sites. Client-level and distributed DP are refused with a :class:`ConfigError` (their
server-side noise and accounting are not wired into the deployment yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from veil.errors import ConfigError

__all__ = ["DeployPipeline", "build_pipeline", "site_trainer", "check_supported"]


@dataclass(frozen=True)
class DeployPipeline:
    """The aggregation pipeline of a deployed run.

    Attributes:
        pipeline: transforms (site side first) around the summation protocol.
        secure: whether the summation protocol is SecAgg+ (else a plain sum).
        weighted: whether a ``WeightedMean`` stage weights updates by example counts.
    """

    pipeline: Any
    secure: bool
    weighted: bool


def check_supported(cfg: Any) -> None:
    """Refuse configs the Flower deployment cannot run yet.

    Raises:
        ConfigError: client-level / distributed DP, or a data set a site cannot read alone.
    """
    p = cfg.privacy
    if p.enabled and p.client_level.enabled:
        raise ConfigError(
            "client-level DP is not supported over Flower yet; run it in simulation or "
            "disable privacy.client_level",
            key="privacy.client_level.enabled",
        )
    if cfg.federation.dropout_rate:
        raise ConfigError(
            "federation.dropout_rate simulates dropouts; a deployment has real ones: "
            "set it to 0",
            key="federation.dropout_rate",
        )


def build_pipeline(cfg: Any) -> DeployPipeline:
    """The pipeline both sides build from ``cfg`` (the same stages as the simulation's).

    Raises:
        ConfigError: unsupported settings (see :func:`check_supported`).
    """
    from veil.aggregation import Clip, Pipeline, PlainSum, UniformMean, WeightedMean
    from veil.aggregation.quantize import Quantize
    from veil.aggregation.secagg import SecAggSum

    check_supported(cfg)
    a = cfg.aggregation
    transforms: list[Any] = []
    if a.clip_norm is not None:
        transforms.append(Clip(a.clip_norm))
    weighted = a.weighted_mean and not cfg.privacy.enabled
    # as in the simulation (aggregation.weighted); never under DP. Weighted under SecAgg,
    # the weight column needs the declared public bound: no site knows the others' sizes
    bound = None
    if weighted and a.summation == "secagg":
        if a.max_weight is None:
            raise ConfigError(
                "a weighted mean under secagg in a deployment needs the public bound on a "
                "site's example count; set aggregation.max_weight", key="aggregation.max_weight"
            )
        bound = a.max_weight
    transforms.append(WeightedMean(bound, a.quantize_range) if weighted else UniformMean())
    summation: Any = PlainSum()
    if a.summation == "secagg":
        transforms.append(Quantize(clip=a.quantize_range, bits=a.bits))
        summation = SecAggSum(
            bits=a.bits,
            k=a.neighbours,
            dropout=a.expected_dropout,
            corrupt=a.corrupt_fraction,
        )
    return DeployPipeline(Pipeline(transforms, summation), a.summation == "secagg", weighted)


def site_trainer(cfg: Any, model: nn.Module, task: str, n_examples: int) -> tuple[Any, Any]:
    """A site's local trainer and its sample-level privacy hook (``None`` without DP).

    The DP-SGD noise is calibrated at the site from its own size and the public schedule,
    exactly as the simulation calibrates it for a site of that size; the hook's ledger
    charges only this site (it reports its ε, nothing else).

    Raises:
        ConfigError, BudgetExceededError: from the privacy layer (δ too large for the
            site's size, planned ε over the target).
    """
    from veil.privacy.plan import RoundPlan
    from veil.training import LocalConfig, Trainer

    lc = cfg.local
    local = LocalConfig(lc.epochs, lc.batch_size, lc.lr, lc.momentum, lc.weight_decay)
    if not (cfg.privacy.enabled and cfg.privacy.sample_level.enabled):
        return Trainer(model, task, local), None
    from veil.privacy import build_privacy

    sizes = np.asarray([n_examples], dtype=np.int64)
    plan = RoundPlan(
        rounds=cfg.rounds,
        n_sites=1,
        cohort_size=1.0,
        sampling="fixed",
        site_sizes=sizes,
        local_steps=local.epochs * -(-sizes // local.batch_size),
    )
    setup = build_privacy(cfg.privacy, plan, model, task, local, cfg.seed)
    hook = setup.hooks[0]
    hook.before_run(plan)
    return setup.trainer, hook
