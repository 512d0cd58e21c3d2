"""Private inference with three compute parties holding 2-of-3 replicated shares over
Z_2^64 (fixed point; ABY3-style, semi-honest, honest majority).

* :class:`MpcSession` / :func:`infer` — in-process parties (threads), for notebooks/tests.
* :mod:`~veil.securecompute.mpc.processes` — the parties as OS processes over mutual TLS.
* :class:`MpcConfig` — fixed-point and comparison parameters, deadline.

Protocol details: :mod:`.engine` (products, exact truncation), :mod:`.compare` (bit
decomposition, Kogge–Stone, ReLU/max/argmax), :mod:`.poly` (piecewise polynomials),
:mod:`.trees` (oblivious forests), :mod:`.program` (IR → plan), :mod:`.roles` (client and
party loop).
"""

from veil.securecompute.mpc.program import MpcConfig
from veil.securecompute.mpc.session import InferenceResult, MpcSession, infer

__all__ = ["MpcConfig", "MpcSession", "InferenceResult", "infer"]
