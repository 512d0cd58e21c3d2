"""CKKS summation: exact integer sums, stated float precision, dropouts, 128-bit refusal,
and a server that cannot decrypt (type-level and by an adversary that tries)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from veil.aggregation import Pipeline, Quantize
from veil.aggregation.base import EncodeContext
from veil.aggregation.ckks_sum import CkksServer, CkksSum, provision_keys
from veil.crypto import SecureRng
from veil.crypto import ring as zring
from veil.crypto.ckks import CkksParams, EvaluationKeys, KeyOwner
from veil.crypto.ckks.summation import choose_sum_params, sum_error_bound
from veil.errors import AbortError, ConfigError, InsecureParametersError, InvalidUpdateError


@pytest.fixture(scope="module")
def ring_sum() -> CkksSum:
    return CkksSum(bits=32, max_sites=10)


def test_ring_sum_is_the_exact_integer_sum_mod_2b(ring_sum: CkksSum) -> None:
    rng = np.random.default_rng(1)
    # values up to 2^31 / 10 in magnitude: any 10 of them fit in the centred 32-bit range
    x = rng.integers(-(2**31) // 10, 2**31 // 10, size=(6, 5000))
    res = ring_sum.aggregate(x, np.arange(6), round=0)
    assert np.array_equal(res.total, zring.reduce(x.sum(axis=0), 32))
    # the rounding was never close to ambiguous: CKKS error within the stated bound
    assert res.measurements["max_residual"] <= ring_sum.error_bound(6) <= 0.25
    assert res.measurements["ciphertexts_per_site"] == math.ceil(5000 / 4096)  # 2 per slot


def test_quantize_then_ckks_equals_quantize_then_plain_sum() -> None:
    rng = np.random.default_rng(2)
    u = rng.uniform(-1, 1, size=(5, 300))
    rngs = [SecureRng.from_seed(3, f"s{i}") for i in range(5)]
    ctx = EncodeContext(0, np.arange(5), np.ones(5), rngs=rngs, cohort_size=5)
    pipe = Pipeline([Quantize(clip=1.0, bits=32)], CkksSum(bits=32, max_sites=5))
    _, res = pipe.run_round(pipe.init(), u, ctx)
    scale = Quantize(clip=1.0, bits=32).scale(5)
    # stochastic rounding: each site off by < 1/s per coordinate
    assert np.max(np.abs(res.aggregate - u.sum(axis=0))) < 5 / scale


def test_float_sum_within_the_stated_tolerance() -> None:
    s = CkksSum(bits=None, value_bound=1.0, max_sites=20, tolerance=1e-5)
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, size=(20, 4100))
    res = s.aggregate(x, np.arange(20), round=3)
    err = np.max(np.abs(res.total - x.sum(axis=0)))
    assert err <= s.error_bound(20) <= 1e-5
    assert err > 0  # CKKS is approximate: the bound is not vacuous
    with pytest.raises(Exception, match="value_bound"):
        s.aggregate(x * 2, np.arange(20), round=0)


def test_dropouts_before_send_and_before_decrypt(ring_sum: CkksSum) -> None:
    x = np.arange(5 * 2000, dtype=np.int64).reshape(5, 2000) - 100
    # site 3 never sends; the decryptor of round 1 (rotation) drops, the next one decrypts
    res = ring_sum.aggregate(x, np.arange(10, 15), round=1,
                             dropouts={13: "before_send", 11: "before_decrypt"})
    assert res.survivors.tolist() == [10, 11, 12, 14]
    assert np.array_equal(zring.to_signed(res.total, 32), x[[0, 1, 2, 4]].sum(axis=0))
    assert 13 not in res.bytes_sent
    assert list(res.bytes_received) == [12]  # one decryptor received the summed ciphertexts
    # bytes = the serialised ciphertexts (zstd-compressed by SEAL: sizes vary by a few bytes);
    # the decryptor also returns the plaintext sum (2000 packed 32-bit words + header)
    assert abs(res.bytes_sent[10] - res.bytes_sent[14]) < 0.01 * res.bytes_sent[10]
    extra = res.bytes_sent[12] - res.bytes_sent[10]
    assert abs(extra - (2000 * 4 + 16)) < 0.01 * res.bytes_sent[10]
    with pytest.raises(AbortError):
        ring_sum.aggregate(x, np.arange(5), 0, dropouts={0: "before_send", 1: "before_send",
                                                          2: "before_send"})
    with pytest.raises(AbortError):
        ring_sum.aggregate(x[:3], np.arange(3), 0, dropouts={i: "before_decrypt" for i in range(3)})
    with pytest.raises(ConfigError):
        ring_sum.aggregate(x, np.arange(5), 0, dropouts={0: "masked"})


def _foreign(blob: bytes, params: CkksParams, key_id: bytes) -> bytes:
    """Ciphertexts under a key nobody else holds, framed as if made under ``key_id``."""
    from veil.crypto.ckks._wire import KIND_CIPHERTEXTS, pack_frames, unpack_frames

    other = KeyOwner(params, relin=False)
    _, frames = unpack_frames(blob, KIND_CIPHERTEXTS, None, "ciphertexts")
    fake = other.encrypt_pairs([np.zeros(2 * params.slots)] * len(frames))
    _, fake_frames = unpack_frames(fake, KIND_CIPHERTEXTS, None, "ciphertexts")
    return pack_frames(KIND_CIPHERTEXTS, key_id, fake_frames)


def test_a_ciphertext_under_another_key_makes_the_round_refused(monkeypatch) -> None:
    """A broken or hostile site sends ciphertexts made under a key of its own (re-labelled
    with the federation's key id): the decrypted sum is not integral, and the round is
    refused instead of releasing a garbage aggregate."""
    from veil.aggregation import ckks_sum

    s = CkksSum(bits=32, max_sites=4)
    honest = ckks_sum.CkksSite.encrypt

    def hostile(self: ckks_sum.CkksSite, row: np.ndarray) -> bytes:
        blob = honest(self, row)
        return _foreign(blob, s.ckks_params, s._owner().key_id) if self.site_id == 2 else blob

    monkeypatch.setattr(ckks_sum.CkksSite, "encrypt", hostile)
    x = np.ones((4, 300), dtype=np.int64)
    with pytest.raises(InvalidUpdateError, match="integer"):
        s.aggregate(x, np.arange(4), 0)


def test_parameters_are_128_bit_and_sized_from_sites() -> None:
    small = choose_sum_params(10, 33, 0.25)
    large = choose_sum_params(1000, 33, 0.25)
    for p in (small, large):
        assert sum(p.coeff_bits) <= {4096: 109, 8192: 218, 16384: 438, 32768: 881}[p.poly_degree]
        assert sum_error_bound(p, 10 if p is small else 1000) <= 0.25
    assert large.scale_bits > small.scale_bits  # more sites -> more error -> larger scale
    with pytest.raises(ConfigError):
        choose_sum_params(100, 58, 0.25)  # 58 integer bits + scale: above one 60-bit prime


def test_parameters_below_128_bit_are_refused() -> None:
    # N = 4096 allows log2(Q) <= 109; 60 + 60 = 120 bits is below 128-bit security
    with pytest.raises(InsecureParametersError, match="128-bit"):
        CkksSum(bits=32, max_sites=3, params=CkksParams(4096, (60, 60), 27))
    with pytest.raises(InsecureParametersError):
        CkksSum(bits=16, max_sites=3, params=CkksParams(2048, (30, 30), 20))  # 60 > 54 bits


def _walk(obj: object, seen: set[int] | None = None, depth: int = 0) -> list[object]:
    """Everything reachable from ``obj`` through attributes, slots and containers."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return []
    seen.add(id(obj))
    out = [obj]
    children: list[object] = []
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        children = list(obj)
    else:
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                children.append(getattr(obj, name))
        children += list(getattr(obj, "__dict__", {}).values())
    for c in children:
        out += _walk(c, seen, depth + 1)
    return out


def test_server_object_holds_no_secret_key(ring_sum: CkksSum) -> None:
    server = ring_sum.server()
    reachable = _walk(server)
    names = {type(o).__name__ for o in reachable}
    assert "KeyOwner" not in names and "SecretKey" not in names and "Decryptor" not in names
    assert not any(hasattr(o, "decrypt") or hasattr(o, "decrypt_sum") for o in reachable)
    # type level: the server side is only ever built from public evaluation keys
    with pytest.raises(TypeError):
        CkksServer(ring_sum._owner())  # type: ignore[arg-type]
    # what the server is sent is the public material only: it parses as EvaluationKeys
    blob = ring_sum._owner().evaluation_keys().to_bytes()
    keys = EvaluationKeys.from_bytes(blob)
    assert not hasattr(keys, "secret_key") and keys.key_id == ring_sum._owner().key_id
    with pytest.raises(TypeError):
        pickle.dumps(ring_sum.site(0))


def test_hostile_server_cannot_read_a_site_update(ring_sum: CkksSum) -> None:
    """The adversary: a server holding every byte it is sent (a site's ciphertexts and the
    public keys) decrypts them with the best key it has — one it generates itself for the
    same parameters — and compares with the site's row: the reconstruction fails."""
    rng = np.random.default_rng(9)
    row = rng.integers(-(2**20), 2**20, size=4096).astype(np.int64)
    blob = ring_sum.site(0).encrypt(row.astype(np.float64))
    own = KeyOwner(ring_sum.ckks_params, relin=False)  # the server's own key pair
    from veil.crypto.ckks._wire import KIND_CIPHERTEXTS, pack_frames, unpack_frames

    _, frames = unpack_frames(blob, KIND_CIPHERTEXTS, None, "ciphertexts")
    guess = own.decrypt_pairs(pack_frames(KIND_CIPHERTEXTS, own.key_id, frames))[0]
    corr = np.corrcoef(guess, row)[0, 1]
    assert abs(corr) < 0.1  # tolerance: |corr| of independent vectors ~ 1/sqrt(4096) = 0.016
    assert np.mean(np.abs(guess - row) < 0.5) < 0.01  # essentially no coordinate recovered
    # and the true key does recover it (the ciphertext really holds the row)
    assert np.allclose(ring_sum.site(1).decrypt_sum(blob, row.size), row, atol=0.01)


def test_keys_are_shared_by_the_sites_and_fresh_per_protocol() -> None:
    a, b = CkksSum(bits=16, max_sites=3), CkksSum(bits=16, max_sites=3)
    assert a.site(0)._owner is a.site(5)._owner  # one provisioned key pair for the sites
    assert a._owner().key_id != b._owner().key_id
    blob = a.site(0).encrypt(np.ones(10))
    with pytest.raises(Exception, match="another CKKS key"):
        b.server().add([blob])
    assert "secret key hidden" in repr(a.site(0)) and "KeyOwner(" not in repr(a.server())
    assert isinstance(provision_keys(a.ckks_params), KeyOwner)


def test_config_builds_quantize_then_ckks_and_refuses_what_cannot_fit() -> None:
    from veil.federation.build import build_pipeline
    from veil.federation.config import parse_config

    cfg = parse_config({"data": {"sites": 8}, "federation": {"cohort_size": 6},
                        "aggregation": {"summation": "ckks", "bits": 24}})
    pipe = build_pipeline(cfg)
    assert pipe.describe()[-2:] == ["quantize", "ckks"]
    assert pipe.summation.max_sites == 6 and pipe.summation.bits == 24
    # 60-bit rows leave no room for a scale in a 60-bit CKKS prime
    with pytest.raises(ConfigError, match="aggregation.bits"):
        build_pipeline(parse_config({"aggregation": {"summation": "ckks", "bits": 60}}))
    # deployment has no CKKS roles: refused rather than silently summed in the clear
    with pytest.raises(ConfigError, match="simulation only"):
        build_pipeline(parse_config({"federation": {"transport": "flower"},
                                     "aggregation": {"summation": "ckks"}}))
    with pytest.raises(ConfigError, match="at least 3"):
        parse_config({"data": {"sites": 2}, "aggregation": {"summation": "ckks"}})
