"""KA, AEAD and ring helpers."""

import numpy as np
import pytest

from veil.crypto import aead, ka, ring
from veil.crypto.prg import prg_uint64
from veil.errors import IntegrityError, MalformedMessageError


def test_key_agreement_symmetric_and_label_bound() -> None:
    a, b = ka.KeyPair.generate(), ka.KeyPair.generate()
    assert ka.agree(a, b.public, "x") == ka.agree(b, a.public, "x")
    assert ka.agree(a, b.public, "x") != ka.agree(a, b.public, "y")
    again = ka.KeyPair.from_private_bytes(a.private_bytes())
    assert again.public == a.public
    assert a.private_bytes().hex() not in repr(a) + str(a)


def test_key_agreement_rejects_bad_keys() -> None:
    a = ka.KeyPair.generate()
    with pytest.raises(MalformedMessageError):
        ka.agree(a, b"\x01" * 31, "x")
    with pytest.raises(IntegrityError):
        ka.agree(a, b"\x00" * 32, "x")  # low-order point


def test_aead_detects_tamper_replay_and_misdirection() -> None:
    key = bytes(range(32))
    ad = aead.bind("share", 3, 1, 2)
    blob = aead.seal(key, b"hello", ad)
    assert aead.open_sealed(key, blob, ad) == b"hello"
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    for bad_blob, bad_ad in [
        (bytes(flipped), ad),
        (blob, aead.bind("share", 4, 1, 2)),  # replay into another round
        (blob, aead.bind("share", 3, 5, 2)),  # re-attributed sender
        (blob, aead.bind("share", 3, 1, 7)),  # redirected
        (blob[:10], ad),
    ]:
        with pytest.raises(IntegrityError):
            aead.open_sealed(key, bad_blob, bad_ad)


@pytest.mark.parametrize("bits", [1, 5, 8, 12, 16, 20, 32, 48, 64])
def test_ring_pack_round_trip_and_exact_size(bits: int) -> None:
    x = prg_uint64(b"k" * 32, 333)
    buf = ring.pack(x, bits)
    assert len(buf) == ring.packed_size(333, bits) == (333 * bits + 7) // 8
    assert np.array_equal(ring.unpack(buf, 333, bits), ring.reduce(x, bits))
    with pytest.raises(MalformedMessageError):
        ring.unpack(buf + b"\x00", 333, bits)


def test_ring_prg_is_aes_ctr_expansion_and_signed_view() -> None:
    seed = b"s" * 32
    expect = prg_uint64(seed, 100) & np.uint64(2**20 - 1)
    assert np.array_equal(ring.prg_ring(seed, 100, 20), expect)
    v = ring.reduce(np.array([-3, 5, -(2**15)], dtype=np.int64), 16)
    assert list(ring.to_signed(v, 16)) == [-3, 5, -(2**15)]
    assert list(ring.to_signed(ring.reduce(np.array([-3]), 64), 64)) == [-3]


def test_prg_buffer_equals_prg_uint64_and_is_reused() -> None:
    buf = ring.PrgBuffer(1000)
    for seed in (b"a" * 32, b"b" * 16):
        assert np.array_equal(buf.fill(seed), prg_uint64(seed, 1000))
    assert buf.fill(b"c" * 32) is buf.words
