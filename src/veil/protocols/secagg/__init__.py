"""SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020) as sans-IO state machines.

Build a :class:`SecAggConfig`, one :class:`SecAggClient` per site and one
:class:`SecAggServer`; they are :class:`veil.protocols.machine.Machine` parties, so any
transport moves their bytes (:func:`veil.transport.driver.drive` in process,
:func:`veil.transport.driver.run_party` over TCP + mutual TLS).
"""

from veil.protocols.secagg.client import SecAggClient
from veil.protocols.secagg.config import SERVER, SERVER_ID, SecAggConfig, site_name, site_of
from veil.protocols.secagg.graph import GraphParams, choose_k, neighbours
from veil.protocols.secagg.server import SecAggOutput, SecAggServer
from veil.protocols.secagg.transitions import STAGES, TABLE, TRANSITIONS, Role, State

__all__ = [
    "SecAggConfig",
    "SecAggClient",
    "SecAggServer",
    "SecAggOutput",
    "SERVER_ID",
    "SERVER",
    "site_name",
    "site_of",
    "GraphParams",
    "choose_k",
    "neighbours",
    "STAGES",
    "TABLE",
    "TRANSITIONS",
    "Role",
    "State",
]
