"""Federated runtime: rounds, cohorts, dropouts, local training, server optimisers."""

from veil.federation.api import (
    TrainOutput,
    build_federation,
    load_data,
    privacy_sweep,
    threat_model,
    train,
)
from veil.federation.config import RunConfig, describe_keys, load_config, parse_config
from veil.federation.hooks import BaseHook, RoundInfo, RoundPlan, RunHook
from veil.federation.local import LocalConfig, SiteData, VectorisedTrainer
from veil.federation.runtime import Federation, RunResult, evaluate
from veil.federation.server_opt import ServerOptimizer, make_server_optimizer

__all__ = [
    "BaseHook",
    "Federation",
    "LocalConfig",
    "RoundInfo",
    "RoundPlan",
    "RunConfig",
    "RunHook",
    "RunResult",
    "ServerOptimizer",
    "SiteData",
    "TrainOutput",
    "VectorisedTrainer",
    "build_federation",
    "describe_keys",
    "evaluate",
    "load_config",
    "load_data",
    "make_server_optimizer",
    "parse_config",
    "privacy_sweep",
    "threat_model",
    "train",
]
