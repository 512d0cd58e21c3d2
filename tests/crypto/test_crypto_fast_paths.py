"""The fast paths of the crypto helpers equal their simple references."""

from __future__ import annotations

import random
import secrets

import numpy as np
import pytest

from veil.crypto import ring, shamir
from veil.crypto.prg import derive_key, derive_keys, hkdf_reference, prg_bytes, prg_uint32
from veil.errors import LocalError, MalformedMessageError

PRIMES = [shamir.PRIME, 2**127 - 1, 2**61 - 1, 257]


@pytest.mark.parametrize("length", [1, 16, 32, 33, 64, 100])
def test_derive_key_equals_cryptography_hkdf(length: int) -> None:
    for secret in (b"", b"\x01" * 32, secrets.token_bytes(32), secrets.token_bytes(70)):
        for label in ("", "veil/secagg/v1/mask/3", "é/unicode"):
            assert derive_key(secret, label, length) == hkdf_reference(secret, label, length)


def test_derive_keys_equals_one_by_one_and_rejects_bad_lengths() -> None:
    s = secrets.token_bytes(32)
    labels = ("a/enc/1", "a/mac/1", "a/mask/1")
    assert derive_keys(s, labels) == [derive_key(s, lab) for lab in labels]
    for bad in (0, 255 * 32 + 1):
        with pytest.raises(LocalError):
            derive_key(s, "x", bad)


def test_prg_uint32_and_buffer_are_the_same_keystream() -> None:
    seed = secrets.token_bytes(32)
    words = prg_uint32(seed, 1001)
    assert words.tobytes() == prg_bytes(seed, 4 * 1001)
    buf = ring.PrgBuffer(1001, word_bytes=4)
    assert buf.fill(seed).dtype == np.dtype("<u4")
    assert np.array_equal(buf.fill(seed), words)
    with pytest.raises(LocalError):
        ring.PrgBuffer(10, word_bytes=2)


@pytest.mark.parametrize("prime", PRIMES)
def test_batched_lagrange_equals_textbook(prime: int) -> None:
    rng = random.Random(prime)  # test points only
    for t in (1, 2, 3, 7, 26):
        for big in (False, True):
            hi = prime - 1 if big else min(prime - 1, 200)
            if hi < t:
                continue
            xs: list[int] = []
            while len(xs) < t:
                x = rng.randrange(1, hi + 1)
                xs += [x] if x not in xs else []
            assert shamir.lagrange_at_zero(xs, prime) == shamir.lagrange_at_zero_simple(xs, prime)


def test_batched_lagrange_rejects_points_equal_mod_p() -> None:
    with pytest.raises(MalformedMessageError):
        shamir.lagrange_at_zero([3, 3 + 257], 257)


@pytest.mark.parametrize("prime", PRIMES)
def test_horner_equals_naive_evaluation(prime: int) -> None:
    rng = random.Random(prime + 1)
    for t in (1, 2, 5, 26, 90):
        coeffs = [rng.randrange(prime) for _ in range(t)]
        for x in (1, 2, 101, 2**20 + 7, prime - 1):
            naive = sum(c * pow(x, i, prime) for i, c in enumerate(coeffs)) % prime
            assert shamir._horner(coeffs, x, prime) == naive


def test_split_combine_with_large_points_and_thresholds() -> None:
    secret = secrets.token_bytes(32)
    for t, xs in ((26, list(range(1, 51))), (4, [2**200 + i for i in range(6)])):
        shares = shamir.split(secret, t, xs)
        picked = random.Random(t).sample(shares, t)
        assert shamir.combine(picked, t) == secret


@pytest.mark.parametrize("bits", [1, 7, 8, 13, 16, 24, 31, 32])
def test_narrow_pack_unpack_equal_wide(bits: int) -> None:
    x = np.random.default_rng(bits).integers(0, 2**32, 1003, dtype=np.uint64)
    narrow = x.astype(np.uint32)
    assert ring.pack(narrow, bits) == ring.pack(x, bits)
    back = ring.unpack(ring.pack(x, bits), 1003, bits, np.uint32)
    assert back.dtype == np.uint32
    assert np.array_equal(back.astype(np.uint64), x & ring.ring_mask(bits))
    wide = ring.unpack(ring.pack(x, bits), 1003, bits)
    assert wide.dtype == np.uint64 and wide.flags.writeable


def test_unpack_refuses_uint32_for_wide_rings() -> None:
    with pytest.raises(LocalError):
        ring.unpack(bytes(8 * 4), 4, 64, np.uint32)
