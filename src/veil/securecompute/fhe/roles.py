"""The two roles of CKKS inference, which meet only through bytes.

Protocol (one server holding the model in the clear, one client holding the key):

1. server → client: the :class:`~veil.securecompute.fhe.compile.Plan` (parameters, rotation
   steps, layout) — public.
2. client: generates a key pair for the plan (:class:`~veil.crypto.ckks.KeyOwner`);
   client → server: evaluation keys (public, relinearisation, the plan's Galois keys).
3. client → server: encrypted, packed inputs.
4. server: evaluates the circuit with an :class:`~veil.crypto.ckks.Evaluator`;
   server → client: encrypted outputs (mod-switched to the last level).
5. client: decrypts, reads the output slots (and takes the argmax for classifiers).

:class:`FheServer` is built from a compiled model and receives keys only as bytes, parsed
into :class:`~veil.crypto.ckks.EvaluationKeys` — a type with no place for a secret key — so
the server cannot hold one. Both roles count the bytes they send and receive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from veil.crypto.ckks import EvaluationKeys, Evaluator, KeyOwner
from veil.errors import ConfigError, LocalError, MalformedMessageError
from veil.securecompute.fhe.compile import Compiled, Plan
from veil.securecompute.fhe.featurewise import FeatureMap, pack_features, unpack_features
from veil.securecompute.fhe.matvec import DenseMap, tile

__all__ = ["FheClient", "FheServer", "Traffic"]


@dataclass
class Traffic:
    """Bytes sent by each role, per message kind."""

    sent: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, n: int) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + int(n)

    @property
    def total(self) -> int:
        return sum(self.sent.values())


class FheClient:
    """The key owner: makes keys for a plan, encrypts inputs, decrypts outputs.

    Args:
        plan: the server's public plan.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.traffic = Traffic()
        t0 = time.perf_counter()
        self._owner = KeyOwner(plan.params, plan.steps, relin=plan.relin)
        self.keygen_s = time.perf_counter() - t0

    def keys_message(self) -> bytes:
        """Evaluation keys for the server (step 2)."""
        blob = self._owner.evaluation_keys().to_bytes()
        self.traffic.add("keys", len(blob))
        return blob

    def encrypt(self, x: np.ndarray) -> bytes:
        """Encrypted, packed inputs (step 3): x is (B, in_features) or (in_features,).

        Raises:
            ConfigError: wrong input width.
        """
        p = self.plan
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(1, -1) if x.ndim == 1 else x.reshape(len(x), -1)
        if x.shape[1] != p.in_features:
            raise ConfigError(f"input has {x.shape[1]} features, the model takes {p.in_features}")
        shift, scale = p.input_affine
        x = (x - shift) / scale
        per = p.per_ciphertext
        vectors = []
        for start in range(0, len(x), per):
            chunk = x[start : start + per]
            if p.layout == "features":
                vectors += pack_features(chunk, p.in_map, p.seg, p.params.slots)
            else:
                vectors.append(np.concatenate([tile(r, p.in_period, p.block, p.block)
                                               for r in chunk]))
        blob = self._owner.encrypt(vectors)
        self.traffic.add("inputs", len(blob))
        return blob

    def decrypt(self, blob: bytes, n_samples: int) -> np.ndarray:
        """Outputs (n_samples, out_features) from the server's reply (step 5).

        Raises:
            IntegrityError: the reply was made under another key.
            MalformedMessageError: truncated or corrupted reply.
        """
        p = self.plan
        rows = []
        vecs = self._owner.decrypt(blob)
        if p.layout == "features":
            per, g = p.seg, len(p.out_map)
            for c, start in enumerate(range(0, n_samples, per)):
                chunk = vecs[c * g : (c + 1) * g]
                if len(chunk) == g:
                    rows.append(unpack_features(chunk, p.out_map, p.seg,
                                                min(per, n_samples - start), p.out_features))
            vecs = []
        for vec in vecs:
            blocks = vec.reshape(-1, p.block)[:, : p.out_features]
            rows.append(blocks)
        out = np.concatenate(rows)[:n_samples] if rows else np.zeros((0, p.out_features))
        if len(out) != n_samples:
            raise LocalError(f"reply holds {len(out)} samples, expected {n_samples}")
        return out

    def __repr__(self) -> str:
        return f"FheClient({self._owner!r})"

    def __reduce__(self) -> Any:
        raise TypeError("an FheClient holds a secret key and cannot be pickled")


class FheServer:
    """The model holder: evaluates the compiled circuit on ciphertexts (no secret key).

    Args:
        compiled: the compiled model (weights in the clear).
    """

    def __init__(self, compiled: Compiled) -> None:
        self.compiled = compiled
        self.plan = compiled.plan
        self.traffic = Traffic()
        self._ev: Evaluator | None = None

    def receive_keys(self, blob: bytes) -> None:
        """Step 2 on the server: parse and load the client's evaluation keys.

        Raises:
            MalformedMessageError: not evaluation keys, or keys for other parameters.
            ConfigError: keys lack the rotation steps or relinearisation the plan needs.
        """
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise TypeError("FheServer.receive_keys takes the client's key message as bytes")
        keys = EvaluationKeys.from_bytes(bytes(blob))
        if keys.params != self.plan.params:
            raise ConfigError("evaluation keys are for other CKKS parameters than the plan")
        missing = set(self.plan.steps) - set(keys.steps)
        if missing or (self.plan.relin and not keys.relin):
            raise ConfigError(
                f"evaluation keys lack {len(missing)} rotation steps or relinearisation keys"
            )
        self._ev = Evaluator(keys)

    @property
    def evaluator(self) -> Evaluator:
        if self._ev is None:
            raise LocalError("no evaluation keys yet: call receive_keys first")
        return self._ev

    def evaluate(self, blob: bytes) -> bytes:
        """Step 4: encrypted inputs → encrypted outputs.

        Raises:
            IntegrityError: inputs made under another key.
            MalformedMessageError: truncated or corrupted inputs.
        """
        ev = self.evaluator
        outs = []
        cts = ev.load(blob)
        if self.plan.layout == "features":
            per = len(self.plan.in_map)
            if len(cts) % per:
                raise MalformedMessageError(
                    f"inputs: {len(cts)} ciphertexts, not a multiple of {per} (one chunk)")
            for start in range(0, len(cts), per):
                chunk = cts[start : start + per]
                for st in self.compiled.steps:
                    if isinstance(st, FeatureMap):
                        chunk = st.apply(ev, chunk)
                    else:
                        chunk = [st.apply(ev, c) for c in chunk]
                outs += chunk
            cts = []
        for ct in cts:
            for st in self.compiled.steps:
                if isinstance(st, DenseMap):
                    ct = st.apply(ev, ct)
                else:
                    ct = st.apply(ev, ct)
            outs.append(ct)
        reply = ev.dump(outs)
        self.traffic.add("outputs", len(reply))
        return reply
