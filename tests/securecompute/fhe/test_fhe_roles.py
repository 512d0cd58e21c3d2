"""The two roles meet only through bytes; the server never holds the secret key."""

from __future__ import annotations

import numpy as np
import pytest

from veil.crypto.ckks import KeyOwner
from veil.errors import ConfigError, IntegrityError, MalformedMessageError
from veil.models.ir import Linear, Model, ReLU
from veil.securecompute.fhe import FheClient, FheServer, compile_model


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    model = Model((8,), (Linear(rng.normal(size=(4, 8)), rng.normal(size=4)), ReLU(),
                         Linear(rng.normal(size=(2, 4)), rng.normal(size=2))))
    calib = rng.normal(size=(50, 8))
    comp = compile_model(model, calib, degree=3)
    client = FheClient(comp.plan)
    server = FheServer(comp)
    server.receive_keys(client.keys_message())
    return model, comp, client, server


def test_bytes_are_counted_per_message(setup) -> None:
    _, _, client, server = setup
    up = client.encrypt(np.ones(8))
    down = server.evaluate(up)
    assert client.traffic.sent["inputs"] >= len(up)
    assert server.traffic.sent["outputs"] >= len(down)
    assert client.traffic.sent["keys"] > 0


def test_server_accepts_keys_only_as_bytes(setup) -> None:
    _, comp, client, _ = setup
    fresh = FheServer(comp)
    with pytest.raises(TypeError):
        fresh.receive_keys(client)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fresh.receive_keys(client._owner)  # type: ignore[arg-type]
    with pytest.raises(MalformedMessageError):
        fresh.receive_keys(b"not keys")


def test_keys_without_the_plans_rotations_are_refused(setup) -> None:
    _, comp, _, _ = setup
    owner = KeyOwner(comp.plan.params, comp.plan.steps[:1])
    with pytest.raises(ConfigError, match="rotation"):
        FheServer(comp).receive_keys(owner.evaluation_keys().to_bytes())


def test_replies_for_another_client_are_refused(setup) -> None:
    _, comp, client, server = setup
    other = FheClient(comp.plan)
    reply = server.evaluate(client.encrypt(np.ones(8)))
    with pytest.raises(IntegrityError):
        other.decrypt(reply, 1)
    with pytest.raises(IntegrityError):  # server was keyed by `client`, not `other`
        server.evaluate(other.encrypt(np.ones(8)))
    with pytest.raises(MalformedMessageError):
        client.decrypt(reply[: len(reply) // 3], 1)


def test_hostile_server_learns_nothing_from_its_state(setup) -> None:
    """A server that dumps every byte string it holds finds no secret key: each ciphertext
    decrypts correctly only with the client's key, and no bytes in the server equal the
    client's decryption of a ciphertext slot set (the server cannot decrypt)."""
    import tenseal.sealapi as s

    model, comp, client, server = setup
    x = np.linspace(-1, 1, 8)
    reply = server.evaluate(client.encrypt(x))
    found = []

    def walk(obj, seen):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        found.append(type(obj).__name__)
        if isinstance(obj, s.SecretKey | s.Decryptor | KeyOwner | FheClient):
            raise AssertionError(f"server holds {type(obj).__name__}")
        d = dict(getattr(obj, "__dict__", {}))
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                d[name] = getattr(obj, name)
        for v in d.values():
            walk(v, seen)
        if isinstance(obj, list | tuple | set):
            for v in obj:
                walk(v, seen)
        if isinstance(obj, dict):
            for v in obj.values():
                walk(v, seen)

    walk(server, set())
    assert "Evaluator" in found and "EvaluationKeys" in found
    out = client.decrypt(reply, 1)
    from veil.securecompute.fhe import approx_forward

    assert np.max(np.abs(out - approx_forward(comp, model, x[None]))) < 1e-2
