"""Federated runtime: rounds, cohorts, dropouts, checkpoints, records, server optimisers.

Whole runs from a config (record, model file, audit log, sweeps) are :mod:`veil.app`.
"""

from veil.federation.build import build_federation, build_pipeline, load_data
from veil.federation.config import RunConfig, describe_keys, load_config, parse_config
from veil.federation.hooks import BaseHook, RoundInfo, RoundPlan, RunHook
from veil.federation.server import Server
from veil.federation.simulation import Federation, RunResult, Simulation, evaluate
from veil.federation.site import Site
from veil.federation.server_opt import ServerOptimizer, make_server_optimizer

__all__ = [
    "BaseHook",
    "Federation",
    "RoundInfo",
    "RoundPlan",
    "RunConfig",
    "RunHook",
    "RunResult",
    "Server",
    "ServerOptimizer",
    "Simulation",
    "Site",
    "build_federation",
    "build_pipeline",
    "describe_keys",
    "evaluate",
    "load_config",
    "load_data",
    "make_server_optimizer",
    "parse_config",
]
