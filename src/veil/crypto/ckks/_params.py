"""CKKS parameters: ring size, modulus chain and scale, checked against 128-bit security.

The security check uses the HomomorphicEncryption.org standard (Albrecht et al., "Homomorphic
Encryption Security Standard", 2018, Table 1, classical 128-bit security, uniform ternary
secret): the total bit length of the coefficient modulus Q (here: every prime, including the
special key-switching prime) must not exceed the table's bound for the ring degree N. SEAL
enforces the same table (``CoeffModulus.MaxBitCount(N, tc128)``), and a test checks that the
two agree; veil's check runs first so that a refusal is an :class:`InsecureParametersError`
naming the bound, never an opaque library error.

Modulus chain layout, for a circuit of multiplicative depth ``D``::

    [first, scale x D, special]      bits: first = scale + integer_bits, special = first

After all ``D`` rescales a value lives modulo the ``first`` prime, so ``integer_bits`` bounds
the magnitude of decrypted results (|value| < 2**(integer_bits - 1)).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from veil.errors import ConfigError, InsecureParametersError

__all__ = [
    "HE_STANDARD_128",
    "CkksParams",
    "check_security",
    "choose_params",
    "MAX_PRIME_BITS",
]

# Ring degree N -> the largest log2(Q) with 128-bit classical security (HE standard, Table 1).
HE_STANDARD_128: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}

MAX_PRIME_BITS = 60  # SEAL's limit for one RNS prime
_MIN_SCALE_BITS = 20
_MIN_DEGREE = 4096  # CKKS with a useful scale needs at least one rescale prime + a special prime


@dataclass(frozen=True)
class CkksParams:
    """One CKKS parameter set.

    Attributes:
        poly_degree: ring degree N (a power of two); N/2 complex slots, used as N/2 real slots.
        coeff_bits: bit sizes of the RNS primes, first (data) prime first, special prime last.
        scale_bits: log2 of the encoding scale Δ (the rescale primes have this size).
    """

    poly_degree: int
    coeff_bits: tuple[int, ...]
    scale_bits: int

    @property
    def slots(self) -> int:
        """Number of real values one ciphertext holds."""
        return self.poly_degree // 2

    @property
    def depth(self) -> int:
        """Multiplicative depth: how many rescales the chain allows."""
        return len(self.coeff_bits) - 2

    @property
    def total_bits(self) -> int:
        """log2(Q) counted as the HE standard counts it (every prime, special one included)."""
        return sum(self.coeff_bits)

    @property
    def integer_bits(self) -> int:
        """Bits of headroom above the scale in the first prime (bounds decrypted magnitudes)."""
        return self.coeff_bits[0] - self.scale_bits

    def to_json(self) -> str:
        """A stable JSON form (sent with evaluation keys; hashed into the key id)."""
        return json.dumps(
            {"n": self.poly_degree, "q": list(self.coeff_bits), "scale": self.scale_bits},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> CkksParams:
        """Inverse of :meth:`to_json`; the result is security-checked.

        Raises:
            ConfigError: if the text is not a parameter set.
            InsecureParametersError: if the set is below 128-bit security.
        """
        try:
            d = json.loads(text)
            p = cls(int(d["n"]), tuple(int(b) for b in d["q"]), int(d["scale"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"not a CKKS parameter set: {e}", key="ckks.params") from None
        check_security(p)
        return p


def check_security(params: CkksParams) -> None:
    """Refuse parameter sets below 128-bit security (HE standard table) or malformed ones.

    Raises:
        InsecureParametersError: if N is not in the table or log2(Q) exceeds its bound.
        ConfigError: if primes, scale or chain length are unusable.
    """
    n = params.poly_degree
    if n not in HE_STANDARD_128:
        raise InsecureParametersError(
            f"ring degree {n} is not one of {sorted(HE_STANDARD_128)} (HE standard table)",
            key="ckks.poly_degree",
        )
    bound = HE_STANDARD_128[n]
    if params.total_bits > bound:
        raise InsecureParametersError(
            f"log2(Q) = {params.total_bits} bits exceeds {bound} bits, the 128-bit bound for "
            f"N = {n}; use a larger ring or fewer/smaller primes",
            key="ckks.coeff_bits",
        )
    if len(params.coeff_bits) < 2:
        raise ConfigError("need at least a data prime and a special prime", key="ckks.coeff_bits")
    if any(not 20 <= b <= MAX_PRIME_BITS for b in params.coeff_bits):
        raise ConfigError(
            f"every prime must have 20..{MAX_PRIME_BITS} bits, got {list(params.coeff_bits)}",
            key="ckks.coeff_bits",
        )
    if not _MIN_SCALE_BITS <= params.scale_bits <= params.coeff_bits[0]:
        raise ConfigError(
            f"scale_bits must be in {_MIN_SCALE_BITS}..{params.coeff_bits[0]} (the data prime)",
            key="ckks.scale_bits",
        )
    if params.coeff_bits[-1] < max(params.coeff_bits[:-1]):
        raise ConfigError(
            "the special (last) prime must be at least as large as every other prime",
            key="ckks.coeff_bits",
        )


def choose_params(
    depth: int,
    *,
    scale_bits: int = 30,
    integer_bits: int = 12,
    min_slots: int = 1,
    max_scale_bits: int = 40,
) -> CkksParams:
    """The smallest 128-bit-secure ring that fits a circuit of ``depth`` and ``min_slots`` values.

    For each ring from the smallest, the scale is the largest value in
    ``[scale_bits, max_scale_bits]`` whose chain fits the ring's 128-bit bound; the first ring
    where one fits wins (so spare bits of a ring go to precision, never to a larger ring).

    Args:
        depth: multiplicative depth (rescales) the circuit needs.
        scale_bits: the least log2 of the scale Δ accepted; a fresh value carries an absolute
            error of roughly 2**-(scale_bits - log2(N)/2 - 3).
        integer_bits: headroom of the data prime above Δ; decrypted values must satisfy
            |x| < 2**(integer_bits - 1).
        min_slots: values that must fit in one ciphertext.
        max_scale_bits: the largest scale tried.

    Raises:
        ConfigError: if no ring up to N = 32768 fits (the message says what would).
    """
    if depth < 0:
        raise ConfigError(f"depth must be >= 0, got {depth}", key="ckks.depth")
    if scale_bits + integer_bits > MAX_PRIME_BITS:
        raise ConfigError(
            f"scale_bits + integer_bits = {scale_bits + integer_bits} exceeds {MAX_PRIME_BITS}",
            key="ckks.scale_bits",
        )

    def chain(sb: int) -> tuple[int, ...]:
        first = sb + integer_bits
        return (first,) + (sb,) * depth + (first,)

    for n, bound in sorted(HE_STANDARD_128.items()):
        if n < _MIN_DEGREE or n // 2 < min_slots:
            continue
        fitting = [
            sb
            for sb in range(scale_bits, max(scale_bits, max_scale_bits) + 1)
            if sum(chain(sb)) <= bound and sb + integer_bits <= MAX_PRIME_BITS
        ]
        if fitting:
            p = CkksParams(n, chain(fitting[-1]), fitting[-1])
            check_security(p)
            return p
    need = sum(chain(scale_bits))
    raise ConfigError(
        f"depth {depth} at scale 2^{scale_bits} needs log2(Q) = {need} bits; the largest "
        f"128-bit ring (N = 32768) allows {HE_STANDARD_128[32768]}: lower the depth (lower-degree "
        "activations) or the scale",
        key="ckks.depth",
    )
