"""Computation on CKKS ciphertexts with public evaluation keys only (the server side).

:class:`Evaluator` is the small interface the FHE algorithms are written against — encode,
multiply by plaintext, add, rotate, multiply ciphertexts — so another CKKS library can slot
in by providing the same methods. It handles CKKS bookkeeping:

* **levels** — operands at different levels are mod-switched to the lower one;
* **scales** — tracked exactly. A plaintext multiplier is encoded so that ``mul_plain`` +
  rescale lands on a chosen scale (default: the input's); a ciphertext product takes operands
  at any scales and keeps its true scale Δ_a·Δ_b/q (q: :meth:`Evaluator.prime` of that level);
  before an addition, the operand at the higher level is brought to the other's scale exactly
  by a product with 1 (it has a level to spare). Scales equal up to float rounding (relative
  1e-9) are equal. Two operands at the same level with really different scales are a circuit
  that did not plan its scales (see ``evaluate_poly``, which asks each part for the scale its
  sum needs): within 1 % they are forced equal, a relative error of that size, counted in
  :attr:`Evaluator.scale_fixups`; beyond, :class:`LocalError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from veil.crypto.ckks._keys import EvaluationKeys, _sealapi, normalise_steps, seal_context
from veil.crypto.ckks._wire import KIND_CIPHERTEXTS, pack_frames, seal_load, seal_save, unpack_frames
from veil.errors import LocalError, MalformedMessageError

__all__ = ["Evaluator"]

_SAME = 1e-9  # scales this close are equal up to float rounding of exact bookkeeping


def _same(x: float, y: float) -> bool:
    return abs(x / y - 1.0) <= _SAME


class Evaluator:
    """CKKS operations for a party without the secret key.

    Args:
        keys: the key owner's public evaluation keys (the only key type accepted).

    Raises:
        TypeError: ``keys`` is not :class:`EvaluationKeys` (a server is never given a key owner).
        MalformedMessageError: a key does not decode for its parameters.
    """

    def __init__(self, keys: EvaluationKeys) -> None:
        if not isinstance(keys, EvaluationKeys):
            raise TypeError(
                f"Evaluator takes EvaluationKeys, not {type(keys).__name__}: a server never "
                "holds the key owner's object or its secret key"
            )
        s = _sealapi()
        self.keys = keys
        self.params = keys.params
        self.key_id = keys.key_id
        self._ctx = seal_context(keys.params)
        self._pk, self._rk, self._gk = keys.load(self._ctx)
        self._enc = s.CKKSEncoder(self._ctx)
        self._ev = s.Evaluator(self._ctx)
        self._steps = set(keys.steps)
        self._scale = float(2**keys.params.scale_bits)
        primes = [q.value() for q in self._ctx.key_context_data().parms().coeff_modulus()]
        self.scale_fixups = 0
        self.scale_drift = max(abs(q / self._scale - 1.0) for q in primes[1:-1]) if len(primes) > 2 else 0.0

    # ------------------------------------------------------------------ wire
    def load(self, blob: bytes) -> list[Any]:
        """Ciphertexts from a key owner's framed bytes.

        Raises:
            IntegrityError: made under another key.
            MalformedMessageError: truncated, corrupted, or foreign parameters.
        """
        s = _sealapi()
        _, frames = unpack_frames(blob, KIND_CIPHERTEXTS, self.key_id, "ciphertexts")
        cts = [seal_load(s.Ciphertext, self._ctx, fr, "ciphertext") for fr in frames]
        for ct in cts:
            if ct.size() != 2:
                raise MalformedMessageError("ciphertext: expected 2 polynomials")
        return cts

    def dump(self, cts: Sequence[Any]) -> bytes:
        """Framed bytes of results, each mod-switched to the last level first (fewest bytes)."""
        last = self._ctx.last_parms_id()
        out = []
        for ct in cts:
            c = self._copy(ct)
            self._ev.mod_switch_to_inplace(c, last)
            out.append(seal_save(c))
        return pack_frames(KIND_CIPHERTEXTS, self.key_id, out)

    # ------------------------------------------------------------- helpers
    @property
    def slots(self) -> int:
        return self.params.slots

    def level(self, ct: Any) -> int:
        """Rescales still available to ``ct`` (0 = only the data prime left)."""
        return self._ctx.get_context_data(ct.parms_id()).chain_index()

    def _copy(self, ct: Any) -> Any:
        s = _sealapi()
        c = s.Ciphertext()
        self._ev.mod_switch_to(ct, ct.parms_id(), c)  # same level: a copy
        return c

    def _last_prime(self, ct: Any) -> float:
        data = self._ctx.get_context_data(ct.parms_id())
        if data.chain_index() == 0:
            raise LocalError("ciphertext has no level left: the circuit is deeper than the parameters")
        return float(data.parms().coeff_modulus()[-1].value())

    def encode(self, values: np.ndarray | float, like: Any, scale: float | None = None) -> Any:
        """A plaintext at ``like``'s level; default scale: the prime the next rescale drops."""
        s = _sealapi()
        pt = s.Plaintext()
        sc = self._last_prime(like) if scale is None else scale
        pid = like.parms_id()
        if np.isscalar(values):
            self._enc.encode(float(values), pid, sc, pt)  # type: ignore[arg-type]
        else:
            v = np.asarray(values, dtype=np.float64).ravel()
            if v.size > self.slots:
                raise LocalError(f"{v.size} values do not fit in {self.slots} slots")
            self._enc.encode(v.tolist(), pid, sc, pt)
        return pt

    def prime(self, level: int) -> float:
        """The prime a rescale at ``level`` drops (what a product made there is divided by).

        Raises:
            LocalError: ``level`` is not in 1..depth.
        """
        data = self._ctx.first_context_data()
        while data is not None and data.chain_index() > level:
            data = data.next_context_data()
        if data is None or level < 1 or data.chain_index() != level:
            raise LocalError(f"no rescale at level {level}: levels are 1..{self.params.depth}")
        return float(data.parms().coeff_modulus()[-1].value())

    def _to_level(self, ct: Any, like: Any) -> Any:
        if self.level(ct) == self.level(like):
            return ct
        s = _sealapi()
        moved = s.Ciphertext()
        self._ev.mod_switch_to(ct, like.parms_id(), moved)  # keeps the scale
        return moved

    def _align(self, a: Any, b: Any) -> tuple[Any, Any]:
        """Bring a and b to one level and one scale, exactly where a level is to spare."""
        la, lb = self.level(a), self.level(b)
        if la != lb:
            hi, lo = (a, b) if la > lb else (b, a)
            if not _same(hi.scale, lo.scale):
                hi = self.mul_plain(hi, 1.0, target_scale=lo.scale)  # exact: uses a spare level
            hi = self._to_level(hi, lo)
            a, b = (hi, lo) if la > lb else (lo, hi)
        if a.scale != b.scale:
            if not _same(a.scale, b.scale):
                if abs(a.scale / b.scale - 1.0) > 1e-2:
                    raise LocalError(
                        f"cannot add ciphertexts at scales {a.scale:.4g} and {b.scale:.4g}"
                    )
                self.scale_fixups += 1  # relative error |1 - a.scale/b.scale| (prime drift)
            b = self._copy(b)
            b.scale = a.scale
        return a, b

    # ------------------------------------------------------------- arithmetic
    def _binary(self, op: Any, a: Any, b: Any) -> Any:
        s = _sealapi()
        a, b = self._align(a, b)
        out = s.Ciphertext()
        op(a, b, out)
        return out

    def add(self, a: Any, b: Any) -> Any:
        """a + b (levels and scales aligned)."""
        return self._binary(self._ev.add, a, b)

    def sub(self, a: Any, b: Any) -> Any:
        """a - b (levels and scales aligned)."""
        return self._binary(self._ev.sub, a, b)

    def add_many(self, cts: Sequence[Any]) -> Any:
        """Sum of several ciphertexts."""
        if not cts:
            raise LocalError("add_many of nothing")
        acc = cts[0]
        for c in cts[1:]:
            acc = self.add(acc, c)
        return acc

    def add_plain(self, ct: Any, values: np.ndarray | float) -> Any:
        """ct + plaintext values (encoded at ct's level and scale)."""
        s = _sealapi()
        out = s.Ciphertext()
        self._ev.add_plain(ct, self.encode(values, ct, scale=ct.scale), out)
        return out

    def mul_plain(
        self,
        ct: Any,
        values: np.ndarray | float | Any,
        *,
        rescale: bool = True,
        target_scale: float | None = None,
    ) -> Any:
        """ct * values (a vector, a scalar, or a plaintext from :meth:`encode`), then rescale.

        The result has scale ``target_scale`` exactly (default: ct's scale). With
        ``rescale=False`` the product keeps scale ct.scale * q; add such products first and call
        :meth:`rescale` once (fewer rescales in inner products).
        """
        s = _sealapi()
        if isinstance(values, s.Plaintext):
            pt = values
        else:
            sc = None
            if target_scale is not None:
                sc = target_scale * self._last_prime(ct) / ct.scale
            pt = self.encode(values, ct, scale=sc)
        out = s.Ciphertext()
        self._ev.multiply_plain(ct, pt, out)
        if rescale:
            self._ev.rescale_to_next_inplace(out)
        return out

    def rescale(self, ct: Any) -> Any:
        """Drop one prime (in place) and return ``ct``."""
        self._ev.rescale_to_next_inplace(ct)
        return ct

    def rotate(self, ct: Any, step: int) -> Any:
        """Rotate slots left by ``step`` (slot i receives slot i + step).

        Raises:
            LocalError: no Galois key for this step (the plan did not declare it).
        """
        s = _sealapi()
        (st,) = normalise_steps([step], self.slots) or (0,)
        if st == 0:
            return ct
        if st not in self._steps:
            raise LocalError(f"no Galois key for rotation step {st}: declare it in the plan")
        out = s.Ciphertext()
        self._ev.rotate_vector(ct, st, self._gk, out)
        return out

    def multiply(self, a: Any, b: Any) -> Any:
        """a * b for two ciphertexts at any scales: relinearise, rescale.

        The operands are brought to one level (mod-switch; scales untouched: a product needs no
        equal scales), and the result's scale is a.scale * b.scale / q exactly, q the prime
        :meth:`prime` gives for that level.
        """
        s = _sealapi()
        if self._rk is None:
            raise LocalError("ciphertext products need relinearisation keys")
        if a is not b:
            if self.level(a) > self.level(b):
                a = self._to_level(a, b)
            else:
                b = self._to_level(b, a)
        out = s.Ciphertext()
        if a is b:
            self._ev.square(a, out)
        else:
            self._ev.multiply(a, b, out)
        self._ev.relinearize_inplace(out, self._rk)
        self._ev.rescale_to_next_inplace(out)  # scale a.scale * b.scale / q, tracked exactly
        return out

    def square(self, a: Any) -> Any:
        """a * a."""
        return self.multiply(a, a)

    def double(self, a: Any) -> Any:
        """2a without using a level."""
        return self.add(a, a)
