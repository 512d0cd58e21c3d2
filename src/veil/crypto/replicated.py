"""2-out-of-3 replicated secret sharing over Z_2^64 (arithmetic) and Z_2^n bit vectors
(boolean), and the pairwise AES-CTR streams that give correlated randomness.

Sharing. ``x = x_0 + x_1 + x_2 (mod 2^64)`` (or ``x_0 ⊕ x_1 ⊕ x_2``); party ``i`` holds the
pair ``(x_i, x_{i+1})`` (indices mod 3), so any two parties can reconstruct and any one
sees two uniformly random words.

Keys. Component key ``K_j`` is known to the two parties that hold component ``j``:
parties ``j − 1`` and ``j``. Party ``i`` therefore holds ``K_i`` (shared with ``i − 1``)
and ``K_{i+1}`` (shared with ``i + 1``). Each key expands, per purpose label, into an
AES-256-CTR stream (:class:`veil.crypto.prg.SecureRng` keyed by HKDF(K_j, label)); all
parties call the same operations in the same order, so the holders of a key stay in step.

* zero sharing: ``α_i = F_i − F_{i+1}`` sums to 0 over the three parties (no traffic);
* random sharing: component ``j`` is ``F_j``, a replicated sharing of a random value
  nobody knows (no traffic);
* pair randomness: a value known exactly to the two holders of ``K_j``.

Shares and masks come only from these CSPRNG streams (or :class:`SecureRng.fresh`), never
from numpy's generator. Reprs show shapes only; share objects refuse to be pickled.
"""

from __future__ import annotations

import numpy as np

from veil.crypto.prg import SecureRng, derive_key
from veil.errors import LocalError

__all__ = ["Share", "share", "share_bool", "reconstruct", "reconstruct_bool", "PairStreams"]


class Share:
    """One party's pair of components ``(x_i, x_{i+1})`` of a replicated sharing.

    ``a`` and ``b`` are numpy arrays of one unsigned dtype and one shape. Arithmetic shares
    are uint64 (Z_2^64); boolean shares use the narrowest word holding their bits.
    """

    __slots__ = ("a", "b")

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        if a.shape != b.shape or a.dtype != b.dtype:
            raise LocalError("the two components of a share must have one shape and dtype")
        self.a = a
        self.b = b

    @property
    def shape(self) -> tuple[int, ...]:
        return self.a.shape

    @property
    def ndim(self) -> int:
        return self.a.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.a.dtype

    def __repr__(self) -> str:  # never show share values
        return f"Share(shape={self.a.shape}, dtype={self.a.dtype})"

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("shares cannot be pickled")

    def reshape(self, *shape: int) -> Share:
        return Share(self.a.reshape(*shape), self.b.reshape(*shape))

    def __getitem__(self, idx: object) -> Share:
        return Share(self.a[idx], self.b[idx])  # type: ignore[index]


def _split3(x: np.ndarray, rng: SecureRng, xor: bool) -> list[np.ndarray]:
    dt = x.dtype
    r0 = rng.uint64(x.shape).astype(dt)
    r1 = rng.uint64(x.shape).astype(dt)
    r2 = (x ^ r0 ^ r1) if xor else (x - r0 - r1)
    return [r0, r1, r2]


def share(x: np.ndarray, rng: SecureRng) -> tuple[Share, Share, Share]:
    """Split uint64 ring elements into the three parties' replicated shares.

    Raises:
        LocalError: ``x`` is not a uint64 array.
    """
    x = np.asarray(x)
    if x.dtype != np.uint64:
        raise LocalError(f"arithmetic shares are uint64 ring elements, got {x.dtype}")
    c = _split3(x, rng, xor=False)
    return tuple(Share(c[i], c[(i + 1) % 3]) for i in range(3))  # type: ignore[return-value]


def share_bool(x: np.ndarray, rng: SecureRng) -> tuple[Share, Share, Share]:
    """XOR-split unsigned words (bit vectors) into replicated boolean shares.

    Raises:
        LocalError: ``x`` is not an unsigned integer array.
    """
    x = np.asarray(x)
    if x.dtype.kind != "u":
        raise LocalError(f"boolean shares are unsigned words, got {x.dtype}")
    c = _split3(x, rng, xor=True)
    return tuple(Share(c[i], c[(i + 1) % 3]) for i in range(3))  # type: ignore[return-value]


def _components(shares: dict[int, Share]) -> list[np.ndarray]:
    if len(shares) < 2 or not set(shares) <= {0, 1, 2}:
        raise LocalError("reconstruction needs the shares of at least two of parties 0, 1, 2")
    comp: dict[int, np.ndarray] = {}
    for i, s in shares.items():
        comp.setdefault(i, s.a)
        comp.setdefault((i + 1) % 3, s.b)
    return [comp[j] for j in range(3)]


def reconstruct(shares: dict[int, Share]) -> np.ndarray:
    """The shared uint64 value from the shares of any two (or three) parties.

    Raises:
        LocalError: fewer than two parties' shares.
    """
    c = _components(shares)
    return c[0] + c[1] + c[2]


def reconstruct_bool(shares: dict[int, Share]) -> np.ndarray:
    """The XOR-shared words from the shares of any two (or three) parties.

    Raises:
        LocalError: fewer than two parties' shares.
    """
    c = _components(shares)
    return c[0] ^ c[1] ^ c[2]


class PairStreams:
    """Party ``i``'s two component keys ``K_i``, ``K_{i+1}`` expanded into labelled streams.

    Args:
        party: this party's index (0, 1, 2).
        key_own: ``K_i`` (32 bytes, shared with party ``i − 1``).
        key_next: ``K_{i+1}`` (32 bytes, shared with party ``i + 1``).

    Raises:
        LocalError: bad party index or key length.
    """

    __slots__ = ("party", "_keys", "_streams")

    def __init__(self, party: int, key_own: bytes, key_next: bytes) -> None:
        if party not in (0, 1, 2):
            raise LocalError(f"replicated sharing has parties 0, 1, 2, not {party!r}")
        if len(key_own) != 32 or len(key_next) != 32:
            raise LocalError("component keys are 32 bytes")
        self.party = party
        self._keys = {party: bytes(key_own), (party + 1) % 3: bytes(key_next)}
        self._streams: dict[tuple[int, str], SecureRng] = {}

    def __repr__(self) -> str:
        return f"PairStreams(party={self.party})"

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("PairStreams hold keys and cannot be pickled")

    def stream(self, component: int, label: str) -> SecureRng:
        """The AES-CTR stream of key ``K_component`` for ``label`` (both holders agree).

        Raises:
            LocalError: this party does not hold ``K_component``.
        """
        key = self._keys.get(component)
        if key is None:
            raise LocalError(f"party {self.party} does not hold component key {component}")
        s = self._streams.get((component, label))
        if s is None:
            s = SecureRng(derive_key(key, "veil/rss/" + label), reproducible=False)
            self._streams[(component, label)] = s
        return s

    def draw(self, component: int, label: str, shape: tuple[int, ...], dtype=np.uint64):
        """Words of stream (``component``, ``label``) as ``dtype``."""
        w = self.stream(component, label).uint64(shape)
        return w if dtype == np.uint64 else w.astype(dtype)

    def zero(self, shape: tuple[int, ...], dtype=np.uint64, xor: bool = False) -> np.ndarray:
        """This party's share ``α_i`` of zero (``F_i − F_{i+1}``, or XOR for boolean)."""
        i = self.party
        f0 = self.draw(i, "zero", shape, dtype)
        f1 = self.draw((i + 1) % 3, "zero", shape, dtype)
        return (f0 ^ f1) if xor else (f0 - f1)

    def random(self, shape: tuple[int, ...], dtype=np.uint64) -> Share:
        """This party's share of a fresh random value nobody knows."""
        i = self.party
        return Share(self.draw(i, "rand", shape, dtype), self.draw((i + 1) % 3, "rand", shape, dtype))
