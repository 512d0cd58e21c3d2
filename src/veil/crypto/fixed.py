"""Fixed-point encoding of reals into Z_2^64 (two's complement, ``frac_bits`` fraction bits).

``encode(x, f) = round(x · 2^f) mod 2^64`` and ``decode(u, f) = signed(u) / 2^f``. A product
of two encodings carries ``2f`` fraction bits and must be truncated by ``f`` bits; the MPC
truncation of :mod:`veil.securecompute.mpc` is exact (to one unit in the last place) for
any value whose ``2f``-bit encoding has magnitude below ``2^62``, i.e. for products of
magnitude below ``2^(62 − 2f)`` (``2^30`` for ``f = 16``). Encoding refuses values whose
encoding would not fit below ``2^62`` (the same bound), so a wrap is an error, never silent.

Only plaintext values are converted to and from floats here; shares are never cast.
"""

from __future__ import annotations

import numpy as np

from veil.errors import ConfigError

__all__ = ["DEFAULT_FRAC_BITS", "encode", "decode", "max_abs", "encode_int"]

DEFAULT_FRAC_BITS = 16
_LIMIT_BITS = 62


def _check_f(frac_bits: int) -> int:
    if not isinstance(frac_bits, int | np.integer) or not 0 <= frac_bits <= 48:
        raise ConfigError(f"frac_bits must be an integer in 0..48, got {frac_bits!r}")
    return int(frac_bits)


def max_abs(frac_bits: int = DEFAULT_FRAC_BITS) -> float:
    """Largest magnitude :func:`encode` accepts: ``2^(62 − f)``."""
    return float(2.0 ** (_LIMIT_BITS - _check_f(frac_bits)))


def encode(x: np.ndarray | float, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """Reals → uint64 ring elements with ``frac_bits`` fraction bits (round to nearest).

    Raises:
        ConfigError: NaN/inf, or a value of magnitude ≥ :func:`max_abs` (it would wrap).
    """
    f = _check_f(frac_bits)
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ConfigError("cannot encode NaN or infinite values in fixed point")
    if arr.size and np.max(np.abs(arr)) >= max_abs(f):
        raise ConfigError(
            f"value of magnitude {np.max(np.abs(arr)):.3g} does not fit fixed point with "
            f"{f} fraction bits (limit {max_abs(f):.3g}); scale the input or lower frac_bits"
        )
    return np.rint(arr * (2.0**f)).astype(np.int64).view(np.uint64)


def encode_int(x: np.ndarray | int) -> np.ndarray:
    """Integers (signed) → uint64 ring elements (no fraction bits)."""
    return np.asarray(x, dtype=np.int64).view(np.uint64)


def decode(u: np.ndarray, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """uint64 ring elements → float64 reals (centred two's complement / 2^f).

    Raises:
        ConfigError: ``u`` is not a uint64 array.
    """
    arr = np.asarray(u)
    if arr.dtype != np.uint64:
        raise ConfigError(f"decode needs uint64 ring elements, got {arr.dtype}")
    return arr.view(np.int64).astype(np.float64) / (2.0 ** _check_f(frac_bits))
