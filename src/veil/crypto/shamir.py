"""t-of-n Shamir secret sharing over the prime field GF(p), p = 2**256 + 297.

Secrets are byte strings of at most 32 bytes (seeds, private keys), read as integers
< 2**256 < p. A share is ``(x, y)`` with ``x`` in ``1..p-1`` (the holder's index) and
``y`` a field element, serialised on :data:`SHARE_BYTES` bytes. Any ``t`` shares with
distinct ``x`` rebuild the secret by Lagrange interpolation at 0; fewer reveal nothing.
Pure functions; the polynomial coefficients come from :mod:`secrets`.
"""

from __future__ import annotations

import functools
import math
import random
import secrets
from collections.abc import Callable, Sequence

import numpy as np

from veil.errors import AbortError, LocalError, MalformedMessageError

__all__ = [
    "PRIME", "SHARE_BYTES", "split", "combine", "combine_verified", "interpolate_at",
    "encode_y", "decode_y", "lagrange_at_zero",
]

PRIME = (1 << 256) + 297
SHARE_BYTES = 33


def encode_y(y: int) -> bytes:
    """A field element as :data:`SHARE_BYTES` little-endian bytes."""
    return int(y).to_bytes(SHARE_BYTES, "little")


def decode_y(raw: bytes, prime: int = PRIME) -> int:
    """Inverse of :func:`encode_y`.

    Raises:
        MalformedMessageError: if the length is wrong or the value is not below ``prime``.
    """
    if len(raw) != SHARE_BYTES:
        raise MalformedMessageError(f"a share is {SHARE_BYTES} bytes, got {len(raw)}")
    y = int.from_bytes(raw, "little")
    if y >= prime:
        raise MalformedMessageError("share value outside the field")
    return y


def split(
    secret: bytes, threshold: int, xs: Sequence[int], prime: int = PRIME
) -> list[tuple[int, int]]:
    """Share ``secret`` so that any ``threshold`` of the shares at ``xs`` rebuild it.

    Args:
        secret: at most 32 bytes (read little endian; keep the length to decode).
        threshold: t ≥ 1.
        xs: distinct non-zero evaluation points, one per holder (len(xs) ≥ t).
        prime: field modulus (must exceed 2**(8·len(secret))).

    Returns:
        ``[(x, y), ...]`` in the order of ``xs``.

    Raises:
        LocalError: on an invalid threshold, repeated/zero points or a too-large secret.
    """
    s = int.from_bytes(secret, "little")
    if s >= prime:
        raise LocalError("secret does not fit in the field")
    if not 1 <= threshold <= len(xs):
        raise LocalError(f"threshold must be in 1..{len(xs)}, got {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < prime for x in xs):
        raise LocalError("share points must be distinct and in 1..p-1")
    coeffs = [s] + [secrets.randbelow(prime) for _ in range(threshold - 1)]
    return [(x, _horner(coeffs, x, prime)) for x in xs]


def _horner(coeffs: Sequence[int], x: int, prime: int) -> int:
    """f(x) mod p for f = Σ coeffs[i]·X^i, reducing only every few steps.

    Share points are usually small (site id + 1), so ``y·x + c`` grows by a few bits per
    step; reducing once every ``~bits(p)/bits(x)`` steps keeps the integers below ~2·bits(p)
    bits while skipping most of the modular reductions of the textbook loop.
    """
    every = max(1, prime.bit_length() // max(1, x.bit_length()))
    y = 0
    for i, c in enumerate(reversed(coeffs), 1):
        y = y * x + c
        if i % every == 0:
            y %= prime
    return y % prime


def _lagrange_terms(xs: Sequence[int], prime: int) -> tuple[list[int], list[int]]:
    """Numerators Π_{j≠i} x_j and denominators Π_{j≠i} (x_j − x_i) of each λ_i, mod p."""
    nums, dens = [], []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % prime
                den = den * (xj - xi) % prime
        nums.append(num)
        dens.append(den)
    return nums, dens


def lagrange_at_zero_simple(xs: Sequence[int], prime: int = PRIME) -> list[int]:
    """Textbook Lagrange coefficients at 0 (one inversion each): the reference that
    :func:`lagrange_at_zero` is tested against."""
    nums, dens = _lagrange_terms(xs, prime)
    return [n * pow(d, -1, prime) % prime for n, d in zip(nums, dens)]


def lagrange_at_zero(xs: Sequence[int], prime: int = PRIME) -> list[int]:
    """Lagrange coefficients λ_i with f(0) = Σ λ_i f(x_i), for distinct non-zero xs.

    λ_i = Π_{j≠i} x_j / Π_{j≠i} (x_j − x_i). All t denominators are inverted with a single
    modular inversion (Montgomery's batch trick: invert the product, then peel off the
    prefix products), instead of one ``pow(·, −1, p)`` per coefficient. Share points are
    usually small (site id + 1): then the products are formed exactly on small integers
    (one reduction per coefficient instead of one per factor). The coefficients depend
    only on the points, which are public, so they are cached per point set: every secret
    rebuilt from shares at the same points reuses them.

    Raises:
        MalformedMessageError: if two points coincide modulo ``prime``.
    """
    return list(_lagrange_cached(tuple(int(x) for x in xs), prime))


#: points up to this many bits take the exact small-integer path of the coefficients
_SMALL_POINT_BITS = 64


@functools.lru_cache(maxsize=4096)
def _lagrange_cached(xs: tuple[int, ...], prime: int) -> tuple[int, ...]:
    t = len(xs)
    if all(0 < x and x.bit_length() <= _SMALL_POINT_BITS for x in xs) and max(xs) < prime:
        if len(set(xs)) != t:
            raise MalformedMessageError("repeated share points")
        nums, dens = _lagrange_terms_exact(xs, prime)
    else:
        nums, dens = _lagrange_terms(xs, prime)
    if any(den == 0 for den in dens):
        raise MalformedMessageError("repeated share points")
    prefix = [1] * (t + 1)
    for i, den in enumerate(dens):
        prefix[i + 1] = prefix[i] * den % prime
    inv = pow(prefix[t], -1, prime)  # 1 / Π dens
    lam = [0] * t
    for i in range(t - 1, -1, -1):
        lam[i] = nums[i] * (inv * prefix[i] % prime) % prime  # 1/den_i = inv · Π_{j<i} den_j
        inv = inv * dens[i] % prime  # now 1 / Π_{j<i} den_j
    return tuple(lam)


def _lagrange_terms_exact(xs: Sequence[int], prime: int) -> tuple[list[int], list[int]]:
    """:func:`_lagrange_terms` for small positive points below ``prime``: Π x_j is formed
    once and divided exactly by each x_i; each Π_{j≠i}(x_j − x_i) is a product of small
    integers (t·bits(x) bits, no reduction until the end). The points must be distinct
    (then no denominator is 0 modulo p: every factor is a non-zero integer below p)."""
    whole = math.prod(xs)
    nums = [whole // x % prime for x in xs]
    if max(xs) < 1 << 62:  # differences fit int64: one row of factors per point, in C
        arr = np.asarray(xs, dtype=np.int64)
        diff = arr[None, :] - arr[:, None]
        np.fill_diagonal(diff, 1)
        rows = diff.tolist()
    else:
        rows = [[xj - xi for xj in xs if xj != xi] for xi in xs]
    return nums, [math.prod(row) % prime for row in rows]


def combine(
    shares: Sequence[tuple[int, int]], threshold: int, length: int = 32, prime: int = PRIME
) -> bytes:
    """Rebuild a ``length``-byte secret from at least ``threshold`` shares.

    Only the first ``threshold`` shares are used (any t determine the polynomial).

    Raises:
        AbortError: if fewer than ``threshold`` shares are given.
        MalformedMessageError: on repeated points or an out-of-range result.
    """
    if len(shares) < threshold:
        raise AbortError(f"need {threshold} shares to reconstruct, got {len(shares)}")
    use = list(shares)[:threshold]
    xs = [x for x, _ in use]
    if len(set(xs)) != len(xs):
        raise MalformedMessageError("repeated share points")
    lam = lagrange_at_zero(xs, prime)
    s = sum(li * y for li, (_, y) in zip(lam, use)) % prime
    if s >= 1 << (8 * length):
        raise MalformedMessageError("shares are inconsistent (secret out of range)")
    return s.to_bytes(length, "little")


def interpolate_at(shares: Sequence[tuple[int, int]], x: int, prime: int = PRIME) -> int:
    """f(x) for the polynomial of degree < len(shares) through ``shares`` (Lagrange).

    Raises:
        MalformedMessageError: on repeated points.
    """
    total = 0
    for i, (xi, yi) in enumerate(shares):
        num, den = 1, 1
        for j, (xj, _) in enumerate(shares):
            if i != j:
                num = num * (x - xj) % prime
                den = den * (xi - xj) % prime
        if den == 0:
            raise MalformedMessageError("repeated share points")
        total += yi * num * pow(den, -1, prime)
    return total % prime


def combine_verified(
    shares: Sequence[tuple[int, int]],
    threshold: int,
    check: Callable[[bytes], bool],
    length: int = 32,
    prime: int = PRIME,
    tries: int = 200,
) -> tuple[bytes, list[int]]:
    """Rebuild a secret that ``check`` accepts from shares of which some may be wrong.

    The first ``threshold`` shares are tried first (the honest case costs one
    reconstruction). If ``check`` refuses the result, random ``threshold``-subsets are
    tried (subset choice is public, so a seeded generator is fine) until one passes; every
    share that does not lie on the accepted polynomial is then reported as wrong. With
    ``w`` wrong shares among ``m``, one subset is all-correct with probability
    C(m−w, t)/C(m, t).

    Returns:
        ``(secret, xs of the wrong shares)``.

    Raises:
        AbortError: fewer than ``threshold`` shares, or no subset within ``tries`` passes.
    """
    shares = list(shares)
    if len(shares) < threshold:
        raise AbortError(f"need {threshold} shares to reconstruct, got {len(shares)}")

    def attempt(use: Sequence[tuple[int, int]]) -> bytes | None:
        try:
            secret = combine(use, threshold, length, prime)
        except MalformedMessageError:
            return None
        return secret if check(secret) else None

    secret = attempt(shares[:threshold])
    if secret is not None:
        return secret, []
    gen = random.Random(len(shares) * 7919 + threshold)
    for _ in range(tries):
        use = gen.sample(shares, threshold)
        secret = attempt(use)
        if secret is not None:
            wrong = [x for x, y in shares if interpolate_at(use, x, prime) != y]
            return secret, wrong
    raise AbortError(
        f"no {threshold} of the {len(shares)} shares rebuild a secret that passes its check"
    )
