"""Shamir sharing: round trips over several thresholds and fields, and misuse errors."""

import secrets

import pytest

from veil.crypto import shamir
from veil.errors import AbortError, LocalError, MalformedMessageError

FIELDS = [shamir.PRIME, (1 << 521) - 1]


@pytest.mark.parametrize("prime", FIELDS)
@pytest.mark.parametrize("t,n", [(1, 1), (1, 5), (2, 3), (3, 5), (5, 9), (10, 10)])
def test_round_trip_any_t_subset(prime: int, t: int, n: int) -> None:
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, t, list(range(1, n + 1)), prime)
    assert shamir.combine(shares[:t], t, 32, prime) == secret
    assert shamir.combine(shares[-t:], t, 32, prime) == secret
    assert shamir.combine(list(reversed(shares)), t, 32, prime) == secret


def test_fewer_than_t_shares_do_not_rebuild() -> None:
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, 3, [1, 2, 3, 4])
    with pytest.raises(AbortError):
        shamir.combine(shares[:2], 3)
    # interpolating t-1 shares as if t-1 were the threshold gives an unrelated value
    assert shamir.combine(shares[:2], 2, length=33)[:32] != secret


def test_share_encoding_round_trip_and_errors() -> None:
    y = shamir.PRIME - 1
    assert shamir.decode_y(shamir.encode_y(y)) == y
    with pytest.raises(MalformedMessageError):
        shamir.decode_y(b"\x00" * 5)
    with pytest.raises(MalformedMessageError):
        shamir.decode_y(b"\xff" * shamir.SHARE_BYTES)


def test_split_rejects_bad_parameters() -> None:
    with pytest.raises(LocalError):
        shamir.split(b"x" * 32, 0, [1, 2])
    with pytest.raises(LocalError):
        shamir.split(b"x" * 32, 3, [1, 2])
    with pytest.raises(LocalError):
        shamir.split(b"x" * 32, 2, [1, 1])
    with pytest.raises(LocalError):
        shamir.split(b"x" * 32, 1, [0])
