"""Federated runtime: rounds, cohorts, dropouts, checkpoints, records, server optimisers.

Whole runs from a config (record, model file, audit log, sweeps) are :mod:`veil.app`.
"""

from veil.federation.build import build_federation, load_data
from veil.federation.config import RunConfig, describe_keys, load_config, parse_config
from veil.federation.hooks import BaseHook, RoundInfo, RoundPlan, RunHook
from veil.federation.runtime import Federation, RunResult, evaluate
from veil.federation.server_opt import ServerOptimizer, make_server_optimizer

__all__ = [
    "BaseHook",
    "Federation",
    "RoundInfo",
    "RoundPlan",
    "RunConfig",
    "RunHook",
    "RunResult",
    "ServerOptimizer",
    "build_federation",
    "describe_keys",
    "evaluate",
    "load_config",
    "load_data",
    "make_server_optimizer",
    "parse_config",
]
