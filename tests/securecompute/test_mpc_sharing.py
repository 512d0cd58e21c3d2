"""Fixed point and replicated sharing: round trips, bounds, and no secrets in reprs."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.crypto.fixed import decode, encode, max_abs
from veil.crypto.prg import SecureRng
from veil.crypto.replicated import PairStreams, reconstruct, reconstruct_bool, share, share_bool
from veil.errors import ConfigError

u64 = st.integers(0, 2**64 - 1)


@settings(max_examples=50, deadline=None)
@given(st.lists(u64, min_size=1, max_size=20), st.integers(0, 2**31))
def test_any_two_parties_reconstruct(vals: list[int], seed: int) -> None:
    x = np.array(vals, dtype=np.uint64)
    s = share(x, SecureRng.from_seed(seed, "t"))
    for pair in ((0, 1), (1, 2), (2, 0)):
        np.testing.assert_array_equal(reconstruct({p: s[p] for p in pair}), x)
    b = share_bool(x, SecureRng.from_seed(seed, "b"))
    np.testing.assert_array_equal(reconstruct_bool({0: b[0], 2: b[2]}), x)


def test_one_party_alone_learns_nothing_about_the_value() -> None:
    """Adversary: party 0 guesses x from its two components (sum, difference, either one).
    Over 2000 sharings of x = 0 vs x = 2^63 its components are uniform: every guess is
    right about half of the time (tolerance 4 sigma)."""
    rng = SecureRng.from_seed(1, "view")
    hits = 0
    n = 2000
    secret_bits = SecureRng.from_seed(2, "bits").uint64(n) & np.uint64(1)
    for k in range(n):
        x = np.array([np.uint64(secret_bits[k]) << np.uint64(63)], dtype=np.uint64)
        s0 = share(x, rng)[0]
        guess = ((s0.a + s0.b) >> np.uint64(63))[0]  # best linear guess from its view
        hits += int(guess == secret_bits[k])
    assert abs(hits - n / 2) < 4 * np.sqrt(n / 4)


@settings(max_examples=50, deadline=None)
@given(st.floats(-1e6, 1e6, allow_nan=False), st.integers(8, 24))
def test_fixed_point_round_trip(v: float, f: int) -> None:
    if abs(v) >= max_abs(f):
        with pytest.raises(ConfigError):
            encode(v, f)
        return
    assert abs(decode(encode(np.array([v]), f), f)[0] - v) <= 2.0 ** -(f + 1) + 1e-12 * abs(v)


def test_fixed_point_bounds_refused_not_wrapped() -> None:
    f = 16
    lim = max_abs(f)
    assert decode(encode(np.array([lim - 1, -(lim - 1)]), f), f).tolist() == [lim - 1, -(lim - 1)]
    for bad in (lim, -lim, np.inf, np.nan):
        with pytest.raises(ConfigError):
            encode(np.array([bad]), f)


def test_reprs_hide_values_and_shares_do_not_pickle() -> None:
    x = np.array([123456789], dtype=np.uint64)
    s = share(x, SecureRng.fresh())
    for obj in (s[0], PairStreams(0, b"k" * 32, b"q" * 32)):
        text = repr(obj)
        assert str(int(s[0].a[0])) not in text and "kkkk" not in text
        with pytest.raises(TypeError):
            pickle.dumps(obj)
