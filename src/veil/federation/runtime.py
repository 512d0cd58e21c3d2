"""Former module of the round loop; it is :mod:`veil.federation.simulation` now."""

from veil.federation.server import round_half
from veil.federation.simulation import Federation, RunResult, Simulation, evaluate, make_plan

__all__ = ["Federation", "RunResult", "Simulation", "evaluate", "make_plan", "round_half"]
