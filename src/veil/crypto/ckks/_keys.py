"""CKKS key material, split by who may hold it.

* :class:`KeyOwner` — the party that owns the data (an inference client, or the sites of an
  encrypted aggregation). It generates the key pair, keeps the secret key in memory only,
  encrypts and decrypts. It cannot be pickled, its repr shows no key, and no method returns
  or serialises the secret key.
* :class:`EvaluationKeys` — everything a computing server needs and nothing more: the
  parameters, the public key, the relinearisation keys, and Galois keys for exactly the
  rotation steps the computation declared. It has no field that could hold a secret key and
  is the only key object :class:`~veil.crypto.ckks.Evaluator` accepts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from veil.crypto.ckks._params import CkksParams, check_security
from veil.crypto.ckks._wire import (
    KEY_ID_BYTES,
    KIND_CIPHERTEXTS,
    KIND_EVAL_KEYS,
    pack_frames,
    seal_load,
    seal_save,
    unpack_frames,
)
from veil.errors import ConfigError, InsecureParametersError, LocalError, MalformedMessageError

__all__ = ["KeyOwner", "EvaluationKeys", "seal_context", "normalise_steps"]


def _sealapi() -> Any:
    import tenseal.sealapi as sealapi  # heavy: import on first use only

    return sealapi


def seal_context(params: CkksParams) -> Any:
    """A SEAL context for ``params``, built with SEAL's own 128-bit check as a second guard.

    Raises:
        InsecureParametersError: below 128-bit security (veil's table, then SEAL's).
        ConfigError: SEAL rejects the parameters for another reason.
    """
    check_security(params)
    s = _sealapi()
    ep = s.EncryptionParameters(s.SCHEME_TYPE.CKKS)
    ep.set_poly_modulus_degree(params.poly_degree)
    ep.set_coeff_modulus(s.CoeffModulus.Create(params.poly_degree, list(params.coeff_bits)))
    ctx = s.SEALContext(ep, True, s.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        msg = ctx.parameters_error_message()
        if "security" in msg.lower():
            raise InsecureParametersError(f"SEAL refuses the parameters: {msg}", key="ckks")
        raise ConfigError(f"SEAL refuses the parameters: {msg}", key="ckks")
    return ctx


def normalise_steps(steps: Iterable[int], slots: int) -> tuple[int, ...]:
    """Rotation steps reduced to (-slots/2, slots/2], zero dropped, sorted, unique."""
    out = set()
    for st in steps:
        r = int(st) % slots
        if r > slots // 2:
            r -= slots
        if r != 0:
            out.add(r)
    return tuple(sorted(out))


def _key_id(params: CkksParams, public_key: bytes) -> bytes:
    h = hashlib.sha256(b"veil-ckks-key-id\x00" + params.to_json().encode() + b"\x00" + public_key)
    return h.digest()[:KEY_ID_BYTES]


class EvaluationKeys:
    """Public evaluation material for one key pair (no secret key, by construction).

    Build it with :meth:`KeyOwner.evaluation_keys` or :meth:`from_bytes`; send it with
    :meth:`to_bytes`.

    Attributes:
        params: the CKKS parameters.
        key_id: 16-byte id of the key pair (hash of parameters and public key).
        steps: rotation steps with a Galois key.
        relin: whether relinearisation keys are included (needed for ciphertext products).
    """

    __slots__ = ("params", "key_id", "steps", "relin", "_public", "_relin", "_galois")

    def __init__(
        self,
        params: CkksParams,
        steps: tuple[int, ...],
        public_key: bytes,
        relin_keys: bytes,
        galois_keys: bytes,
    ) -> None:
        self.params = params
        self.steps = steps
        self.relin = bool(relin_keys)
        self.key_id = _key_id(params, public_key)
        self._public = public_key
        self._relin = relin_keys
        self._galois = galois_keys

    def to_bytes(self) -> bytes:
        """The keys as one framed message (what the server receives)."""
        steps = ",".join(str(s) for s in self.steps).encode()
        frames = [self.params.to_json().encode(), steps, self._public, self._relin, self._galois]
        return pack_frames(KIND_EVAL_KEYS, self.key_id, frames)

    @classmethod
    def from_bytes(cls, blob: bytes) -> EvaluationKeys:
        """Parse keys sent by a key owner.

        Raises:
            MalformedMessageError: truncated or malformed, or the key id does not match.
            InsecureParametersError: the parameters are below 128-bit security.
        """
        key_id, frames = unpack_frames(blob, KIND_EVAL_KEYS, None, "evaluation keys")
        if len(frames) != 5:
            raise MalformedMessageError(f"evaluation keys: {len(frames)} frames, expected 5")
        params = CkksParams.from_json(frames[0].decode("utf-8", "replace"))
        try:
            steps = tuple(int(x) for x in frames[1].decode().split(",") if x)
        except ValueError:
            raise MalformedMessageError("evaluation keys: bad rotation step list") from None
        keys = cls(params, steps, frames[2], frames[3], frames[4])
        if keys.key_id != key_id:
            raise MalformedMessageError("evaluation keys: key id does not match the public key")
        return keys

    def load(self, context: Any) -> tuple[Any, Any | None, Any | None]:
        """SEAL objects ``(public_key, relin_keys or None, galois_keys or None)``.

        Raises:
            MalformedMessageError: a key does not decode for these parameters.
        """
        s = _sealapi()
        pk = seal_load(s.PublicKey, context, self._public, "public key")
        rk = seal_load(s.RelinKeys, context, self._relin, "relin keys") if self._relin else None
        gk = seal_load(s.GaloisKeys, context, self._galois, "galois keys") if self._galois else None
        return pk, rk, gk

    @property
    def nbytes(self) -> int:
        """Size of :meth:`to_bytes` without building it."""
        return len(self._public) + len(self._relin) + len(self._galois) + 200

    def __repr__(self) -> str:
        return (
            f"EvaluationKeys(N={self.params.poly_degree}, depth={self.params.depth}, "
            f"steps={len(self.steps)}, relin={self.relin}, id={self.key_id.hex()[:8]})"
        )


class KeyOwner:
    """Holder of a CKKS secret key: key generation, encryption, decryption.

    Encryption uses the secret key (SEAL's seeded symmetric mode), which halves the size of
    the ciphertexts sent; it needs no public key. The secret key stays in memory: it is never
    serialised, pickled, logged or returned.

    Args:
        params: a parameter set (checked for 128-bit security).
        galois_steps: rotation steps the server's computation will need; only these get keys.
        relin: generate relinearisation keys (needed when the server multiplies ciphertexts).

    Raises:
        InsecureParametersError: ``params`` below 128-bit security.
    """

    __slots__ = ("params", "key_id", "_ctx", "_encoder", "_sk_encryptor", "_decryptor", "_eval")

    def __init__(
        self, params: CkksParams, galois_steps: Sequence[int] = (), *, relin: bool = True
    ) -> None:
        s = _sealapi()
        self.params = params
        self._ctx = seal_context(params)
        keygen = s.KeyGenerator(self._ctx)
        secret = keygen.secret_key()
        public = s.PublicKey()
        keygen.create_public_key(public)
        pk_bytes = seal_save(public)
        steps = normalise_steps(galois_steps, params.slots)
        galois = b""
        if steps:
            tool = self._ctx.key_context_data().galois_tool()
            galois = seal_save(keygen.create_galois_keys(tool.get_elts_from_steps(list(steps))))
        relin_bytes = seal_save(keygen.create_relin_keys()) if relin else b""
        self._eval = EvaluationKeys(params, steps, pk_bytes, relin_bytes, galois)
        self.key_id = self._eval.key_id
        self._encoder = s.CKKSEncoder(self._ctx)
        self._sk_encryptor = s.Encryptor(self._ctx, secret)
        self._decryptor = s.Decryptor(self._ctx, secret)
        del secret, keygen

    def evaluation_keys(self) -> EvaluationKeys:
        """The public material to hand to a server."""
        return self._eval

    @property
    def context(self) -> Any:
        """The SEAL context (public)."""
        return self._ctx

    def _encode(self, values: np.ndarray) -> Any:
        s = _sealapi()
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size > self.params.slots:
            raise LocalError(f"{v.size} values do not fit in {self.params.slots} slots")
        if not np.all(np.isfinite(v)):
            raise LocalError("cannot encrypt NaN or infinite values")
        pt = s.Plaintext()
        self._encoder.encode(v.tolist(), float(2**self.params.scale_bits), pt)
        return pt

    def encrypt(self, vectors: Sequence[np.ndarray]) -> bytes:
        """Encrypt one ciphertext per vector (each at most ``params.slots`` values); framed bytes.

        Raises:
            LocalError: a vector is too long or holds NaN/inf.
        """
        frames = [seal_save(self._sk_encryptor.encrypt_symmetric(self._encode(v))) for v in vectors]
        return pack_frames(KIND_CIPHERTEXTS, self.key_id, frames)

    def encrypt_pairs(self, vectors: Sequence[np.ndarray]) -> bytes:
        """Like :meth:`encrypt` with two real values per slot (real and imaginary parts):
        each vector holds at most ``2 · params.slots`` values. Halves the ciphertexts for
        computations that only add (encrypted aggregation); read back with
        :meth:`decrypt_pairs`.

        Raises:
            LocalError: a vector is too long or holds NaN/inf.
        """
        s = _sealapi()
        frames = []
        for v in vectors:
            x = np.asarray(v, dtype=np.float64).ravel()
            if x.size > 2 * self.params.slots:
                raise LocalError(f"{x.size} values do not fit in {self.params.slots} slots x 2")
            if not np.all(np.isfinite(x)):
                raise LocalError("cannot encrypt NaN or infinite values")
            x = np.pad(x, (0, x.size % 2))
            pt = s.Plaintext()
            self._encoder.encode((x[0::2] + 1j * x[1::2]).tolist(),
                                 float(2**self.params.scale_bits), pt)
            frames.append(seal_save(self._sk_encryptor.encrypt_symmetric(pt)))
        return pack_frames(KIND_CIPHERTEXTS, self.key_id, frames)

    def decrypt_pairs(self, blob: bytes) -> list[np.ndarray]:
        """Inverse of :meth:`encrypt_pairs`: ``2 · slots`` floats per ciphertext.

        Raises:
            IntegrityError: the ciphertexts were made under another key.
            MalformedMessageError: truncated or corrupted.
        """
        _, frames = unpack_frames(blob, KIND_CIPHERTEXTS, self.key_id, "ciphertexts")
        s = _sealapi()
        out = []
        for fr in frames:
            pt = s.Plaintext()
            self._decryptor.decrypt(seal_load(s.Ciphertext, self._ctx, fr, "ciphertext"), pt)
            z = np.asarray(self._encoder.decode_complex(pt), dtype=np.complex128)
            out.append(np.stack([z.real, z.imag], axis=1).ravel())
        return out

    def encrypt_local(self, values: np.ndarray) -> Any:
        """One SEAL ciphertext (not serialised) — for tests and in-process use."""
        s = _sealapi()
        ct = s.Ciphertext()
        self._sk_encryptor.encrypt_symmetric(self._encode(values), ct)
        return ct

    def decrypt(self, blob: bytes) -> list[np.ndarray]:
        """Decrypt framed ciphertexts made under this key into float arrays of ``slots`` values.

        Raises:
            IntegrityError: the ciphertexts were made under another key.
            MalformedMessageError: truncated or corrupted, or not valid for these parameters.
        """
        _, frames = unpack_frames(blob, KIND_CIPHERTEXTS, self.key_id, "ciphertexts")
        s = _sealapi()
        return [
            self.decrypt_local(seal_load(s.Ciphertext, self._ctx, fr, "ciphertext"))
            for fr in frames
        ]

    def decrypt_local(self, ct: Any) -> np.ndarray:
        """Decrypt one SEAL ciphertext."""
        s = _sealapi()
        pt = s.Plaintext()
        self._decryptor.decrypt(ct, pt)
        return np.asarray(self._encoder.decode_double(pt), dtype=np.float64)

    def __repr__(self) -> str:
        return f"KeyOwner(N={self.params.poly_degree}, id={self.key_id.hex()[:8]}, secret key hidden)"

    def __reduce__(self) -> Any:
        raise TypeError("a KeyOwner holds a secret key and cannot be pickled or copied")
