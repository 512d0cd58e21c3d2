"""CKKS parameters for a *sum* of ciphertexts, and the error bound that comes with them.

An encrypted sum needs no multiplication (depth 0), so the modulus chain is one data prime
``q0`` and the special prime: ``[q0, special]``, ``q0 = scale_bits + integer_bits``. What
matters is

* **range** — a decrypted slot is correct modulo ``q0 / Δ``: every value of the *sum* must
  satisfy ``|x| < 2**(integer_bits - 1)``;
* **error** — each site's ciphertext adds an independent error to every slot (the rounding
  of the encoding and SEAL's encryption noise, coefficients of std σ_e = 3.2). In the
  canonical embedding a slot's error is a sum of N coefficient errors, so one fresh
  ciphertext has per-slot error std at most ``√N · √(σ_e² + 1/12) / Δ`` (in each of the
  real and imaginary parts). The bound stated for a
  sum of ``n`` ciphertexts takes six such standard deviations per site and adds them
  linearly (no √n cancellation claimed)::

      |error per slot| ≤ B(n) = n · 6 · √N · √(σ_e² + 1/12) / Δ

* **bytes** — a ciphertext made by secret-key (seeded) encryption is N coefficients mod
  ``q0`` (one 64-bit word each in SEAL's format) plus a seed; with two real values per
  complex slot it holds N values: ≈ 8 bytes per value, a few % less after SEAL's
  compression. The error bound below holds for the real and the imaginary part alike.

:func:`choose_sum_params` picks the smallest 128-bit-secure ring whose bound on ``q0``
fits (``q0 + special ≤`` the HE-standard bound, ``special ≥ q0``, primes ≤ 60 bits).
"""

from __future__ import annotations

import math

from veil.crypto.ckks._params import HE_STANDARD_128, MAX_PRIME_BITS, CkksParams, check_security
from veil.errors import ConfigError

__all__ = ["SEAL_NOISE_STD", "choose_sum_params", "sum_error_bound"]

#: SEAL's default standard deviation of the encryption error's coefficients
SEAL_NOISE_STD = 3.2
_MIN_SCALE_BITS = 20
_MIN_DEGREE = 4096


def _per_site(poly_degree: int) -> float:
    return 6.0 * math.sqrt(poly_degree) * math.sqrt(SEAL_NOISE_STD**2 + 1.0 / 12.0)


def sum_error_bound(params: CkksParams, n_sites: int) -> float:
    """B(n): the stated bound on the absolute error of one slot of a sum of ``n_sites``
    fresh ciphertexts (module docstring)."""
    return max(1, int(n_sites)) * _per_site(params.poly_degree) / float(2**params.scale_bits)


def choose_sum_params(max_sites: int, integer_bits: int, tolerance: float) -> CkksParams:
    """The cheapest 128-bit CKKS parameters for summing up to ``max_sites`` ciphertexts.

    Args:
        max_sites: the most ciphertexts that will be added (the cohort bound).
        integer_bits: headroom above the scale: every slot of the sum must satisfy
            ``|x| < 2**(integer_bits - 1)``.
        tolerance: the largest absolute error per slot the sum may carry
            (:func:`sum_error_bound` ≤ tolerance).

    Raises:
        ConfigError: no 128-bit ring holds the range and the precision together (the
            message says by how many bits).
    """
    if max_sites < 1 or integer_bits < 1 or not (tolerance > 0 and math.isfinite(tolerance)):
        raise ConfigError(
            "choose_sum_params needs max_sites >= 1, integer_bits >= 1, tolerance > 0",
            key="aggregation.summation",
        )
    need = 0
    for n, bound in sorted(HE_STANDARD_128.items()):
        if n < _MIN_DEGREE:
            continue
        scale = max(_MIN_SCALE_BITS, math.ceil(math.log2(max_sites * _per_site(n) / tolerance)))
        q0 = scale + integer_bits
        need = q0
        # chain [q0, special], special >= q0: 2 * q0 <= bound
        if q0 <= MAX_PRIME_BITS and 2 * q0 <= bound:
            p = CkksParams(n, (q0, q0), scale)
            check_security(p)
            return p
    raise ConfigError(
        f"summing {max_sites} ciphertexts with {integer_bits} integer bits at tolerance "
        f"{tolerance:g} needs a {need}-bit data prime; CKKS primes have at most "
        f"{MAX_PRIME_BITS} bits: lower aggregation.bits (or the value range), or use "
        "aggregation.summation = 'secagg'",
        key="aggregation.bits",
    )
