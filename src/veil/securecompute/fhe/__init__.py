"""CKKS private inference: the client holds the key, the server holds the model in the clear.

* :func:`compile_model` — IR model → :class:`Compiled` (dense maps + Chebyshev polynomials,
  parameters from depth and width) with a public :class:`Plan`.
* :class:`FheClient` / :class:`FheServer` — the two roles, meeting only through bytes.
* :func:`run_inference` — both roles in one process, phases timed and bytes counted.
"""

from veil.securecompute.fhe.compile import (
    FOREST_REASON,
    Compiled,
    Plan,
    approx_forward,
    compile_model,
)
from veil.securecompute.fhe.roles import FheClient, FheServer, Traffic

__all__ = [
    "compile_model",
    "approx_forward",
    "Compiled",
    "Plan",
    "FOREST_REASON",
    "FheClient",
    "FheServer",
    "Traffic",
]
