"""CKKS wrapper: 128-bit parameter checks, accuracy of each operation, key separation,
typed errors for truncated/foreign/wrong-key data, and a hostile server."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from veil.crypto.ckks import (
    HE_STANDARD_128,
    CkksParams,
    EvaluationKeys,
    Evaluator,
    KeyOwner,
    check_security,
    choose_params,
    seal_context,
)
from veil.crypto.ckks._wire import seal_save
from veil.errors import ConfigError, InsecureParametersError, IntegrityError, LocalError, MalformedMessageError

STEPS = (1, 3, -2)


@pytest.fixture(scope="module")
def params() -> CkksParams:
    return choose_params(2, scale_bits=30)


@pytest.fixture(scope="module")
def owner(params: CkksParams) -> KeyOwner:
    return KeyOwner(params, STEPS)


@pytest.fixture(scope="module")
def server(owner: KeyOwner) -> Evaluator:
    # the server sees only the serialised evaluation keys
    return Evaluator(EvaluationKeys.from_bytes(owner.evaluation_keys().to_bytes()))


def test_table_is_the_he_standard_as_seal_enforces_it() -> None:
    import tenseal.sealapi as s

    for n, bits in HE_STANDARD_128.items():
        assert s.CoeffModulus.MaxBitCount(n, s.SEC_LEVEL_TYPE.TC128) == bits


@pytest.mark.parametrize(
    "bad",
    [
        CkksParams(4096, (40, 30, 40), 30),  # 110 > 109 bits
        CkksParams(8192, (60, 40, 40, 40, 60), 40),  # 240 > 218
        CkksParams(2048, (30, 30), 25),  # 60 > 54
        CkksParams(1000, (30, 30), 25),  # not a ring of the table
    ],
)
def test_parameters_below_128_bits_are_refused(bad: CkksParams) -> None:
    with pytest.raises(InsecureParametersError):
        check_security(bad)
    with pytest.raises(InsecureParametersError):
        KeyOwner(bad)
    with pytest.raises(InsecureParametersError):  # a server parsing such parameters refuses too
        CkksParams.from_json(bad.to_json())


def test_choose_params_fits_depth_in_smallest_secure_ring() -> None:
    for depth in range(0, 12):
        p = choose_params(depth, scale_bits=30)
        check_security(p)
        assert p.depth == depth and p.scale_bits >= 30
        smaller = [n for n in HE_STANDARD_128 if 4096 <= n < p.poly_degree]
        for n in smaller:  # no smaller ring would have fitted
            assert 2 * (30 + 12) + depth * 30 > HE_STANDARD_128[n]
    with pytest.raises(ConfigError):
        choose_params(40, scale_bits=40)


def test_operations_match_plaintext(owner: KeyOwner, server: Evaluator, params: CkksParams) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-2, 2, params.slots), rng.uniform(-2, 2, params.slots)
    w = rng.uniform(-1, 1, params.slots)
    cx, cy = server.load(owner.encrypt([x, y]))
    got = {
        "add": (server.add(cx, cy), x + y),
        "sub": (server.sub(cx, cy), x - y),
        "mul_plain": (server.mul_plain(cx, w), x * w),
        "add_plain": (server.add_plain(cx, w), x + w),
        "rotate": (server.rotate(cx, 3), np.roll(x, -3)),
        "rotate_neg": (server.rotate(cx, -2), np.roll(x, 2)),
        "multiply": (server.multiply(cx, cy), x * y),
        # different levels and scales: exact alignment through a spare level
        "mixed": (server.add(server.multiply(server.mul_plain(cx, w), cy), cx), x * w * y + x),
    }
    for name, (ct, want) in got.items():
        (out,) = owner.decrypt(server.dump([ct]))
        assert np.max(np.abs(out - want)) < 1e-3, name  # scale >= 2^30: errors ~1e-5


def test_missing_galois_key_is_a_typed_error(owner: KeyOwner, server: Evaluator, params) -> None:
    (c,) = server.load(owner.encrypt([np.ones(4)]))
    with pytest.raises(LocalError, match="Galois key"):
        server.rotate(c, 5)
    assert set(owner.evaluation_keys().steps) == set(STEPS)  # only the declared keys exist


def test_truncated_corrupted_foreign_and_wrong_key_data(owner: KeyOwner, server: Evaluator,
                                                        params: CkksParams) -> None:
    blob = owner.encrypt([np.arange(8.0)])
    for cut in (3, 20, len(blob) // 2, len(blob) - 1):
        with pytest.raises(MalformedMessageError):
            server.load(blob[:cut])
    with pytest.raises(MalformedMessageError):
        server.load(blob + b"\x00")
    corrupted = bytearray(blob)
    corrupted[40:60] = b"\xff" * 20  # inside SEAL's own header
    with pytest.raises(MalformedMessageError):
        server.load(bytes(corrupted))
    # another key pair, same parameters: refused by key id
    other = KeyOwner(params, ())
    with pytest.raises(IntegrityError):
        server.load(other.encrypt([np.arange(8.0)]))
    with pytest.raises(IntegrityError):
        owner.decrypt(other.encrypt([np.arange(8.0)]))
    # other parameters, key id forged to this key's: SEAL's validity check refuses it
    foreign = KeyOwner(choose_params(1, scale_bits=30), ())
    fb = bytearray(foreign.encrypt([np.arange(8.0)]))
    fb[6:22] = owner.key_id
    with pytest.raises(MalformedMessageError):
        server.load(bytes(fb))
    with pytest.raises(MalformedMessageError):
        EvaluationKeys.from_bytes(owner.evaluation_keys().to_bytes()[:-10])


def test_server_holds_no_secret_key(owner: KeyOwner, server: Evaluator) -> None:
    import tenseal.sealapi as s

    with pytest.raises(TypeError):
        Evaluator(owner)  # type: ignore[arg-type]

    def walk(obj, seen):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        assert not isinstance(obj, s.SecretKey | s.Decryptor | KeyOwner)
        attrs = getattr(obj, "__dict__", {})
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                attrs = {**attrs, name: getattr(obj, name)}
        for v in attrs.values():
            walk(v, seen)
        if isinstance(obj, list | tuple | set | dict):
            for v in obj.values() if isinstance(obj, dict) else obj:
                walk(v, seen)

    walk(server, set())
    assert not hasattr(EvaluationKeys, "secret_key")
    with pytest.raises(TypeError):
        pickle.dumps(owner)
    assert "secret key hidden" in repr(owner)


def test_secret_key_is_never_serialised_and_not_in_evaluation_keys(owner: KeyOwner) -> None:
    import tenseal.sealapi as s

    ctx = seal_context(owner.params)
    sk = s.KeyGenerator(ctx).secret_key()
    with pytest.raises(TypeError):
        seal_save(sk)


def test_hostile_server_cannot_decrypt_with_its_own_key(owner: KeyOwner, params) -> None:
    """The server, holding only evaluation keys, tries to read the client's input by
    decrypting with a secret key it generated itself: the reconstruction fails."""
    import tenseal.sealapi as s

    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, params.slots)
    blob = owner.encrypt([x])
    keys = EvaluationKeys.from_bytes(owner.evaluation_keys().to_bytes())
    ctx = seal_context(keys.params)
    from veil.crypto.ckks._wire import KIND_CIPHERTEXTS, seal_load, unpack_frames

    _, frames = unpack_frames(blob, KIND_CIPHERTEXTS, keys.key_id, "ct")
    ct = seal_load(s.Ciphertext, ctx, frames[0], "ct")
    guess_key = s.KeyGenerator(ctx).secret_key()
    pt = s.Plaintext()
    s.Decryptor(ctx, guess_key).decrypt(ct, pt)
    guess = np.asarray(s.CKKSEncoder(ctx).decode_double(pt))
    assert np.mean(np.abs(guess - x)) > 1e3  # noise, nowhere near the input
    assert abs(np.corrcoef(guess, x)[0, 1]) < 0.1
