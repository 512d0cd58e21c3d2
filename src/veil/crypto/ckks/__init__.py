"""CKKS on TenSEAL's SEAL binding: the only place veil touches TenSEAL.

* :mod:`._params` — :class:`CkksParams`, :func:`choose_params` (ring, chain and scale from the
  circuit's depth), :func:`check_security` (HE-standard 128-bit table →
  :class:`~veil.errors.InsecureParametersError`).
* :mod:`._keys` — :class:`KeyOwner` (secret key, encrypt/decrypt; never serialised) and
  :class:`EvaluationKeys` (public, relinearisation and only the declared Galois keys).
* :mod:`._evaluator` — :class:`Evaluator`, the server side, built from evaluation keys only.
* :mod:`._wire` — framing with a key id; truncated/foreign data → typed errors.

Used by private inference (:mod:`veil.securecompute.fhe`) and meant for encrypted
aggregation: sites share a :class:`KeyOwner`'s role, the server an :class:`Evaluator`.
"""

from veil.crypto.ckks._evaluator import Evaluator
from veil.crypto.ckks._keys import EvaluationKeys, KeyOwner, normalise_steps, seal_context
from veil.crypto.ckks._params import HE_STANDARD_128, CkksParams, check_security, choose_params

__all__ = [
    "HE_STANDARD_128",
    "CkksParams",
    "check_security",
    "choose_params",
    "KeyOwner",
    "EvaluationKeys",
    "Evaluator",
    "seal_context",
    "normalise_steps",
]
