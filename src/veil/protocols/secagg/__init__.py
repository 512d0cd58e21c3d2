"""SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020) as sans-IO state machines.

Build a :class:`SecAggConfig`, one :class:`SecAggClient` per site and one
:class:`SecAggServer`; move the bytes between them with any transport
(:mod:`veil.aggregation.secagg` has the in-process one).
"""

from veil.protocols.secagg.client import SecAggClient
from veil.protocols.secagg.config import SERVER_ID, SecAggConfig
from veil.protocols.secagg.graph import GraphParams, choose_k, neighbours
from veil.protocols.secagg.server import SecAggOutput, SecAggServer
from veil.protocols.secagg.transitions import STAGES, TRANSITIONS, Role, State

__all__ = [
    "SecAggConfig",
    "SecAggClient",
    "SecAggServer",
    "SecAggOutput",
    "SERVER_ID",
    "GraphParams",
    "choose_k",
    "neighbours",
    "STAGES",
    "TRANSITIONS",
    "Role",
    "State",
]
