"""CKKS-encrypted summation: the sites hold the key, the server adds ciphertexts.

:class:`CkksSum` implements :class:`~veil.aggregation.base.SumProtocol` in the way NVFlare's
homomorphic aggregation does:

0. **Key provisioning (out of band, once per run).** One CKKS key pair is generated for the
   federation (:func:`provision_keys`) and given to every site; the server receives only the
   public :class:`~veil.crypto.ckks.EvaluationKeys` (parameters and public key — no
   relinearisation or rotation keys: a sum needs none). The server-side object
   :class:`CkksServer` is built from ``EvaluationKeys`` only and has no way to decrypt.
1. **Encrypt (each site).** A site's encoded row is split into ``⌈d / N⌉`` chunks, each
   packed into the N/2 complex slots of one ciphertext (two values per slot, as real and
   imaginary parts; seeded secret-key encryption: half the bytes of public-key encryption)
   and sent.
2. **Add (server).** The server adds, slot-wise, the ciphertexts of the sites that sent —
   a site that sends nothing is simply not in the sum (no recovery round is needed) — and
   sends the summed ciphertexts to one decryptor site (rotating with the round; if it is
   gone, the next one that sent).
3. **Decrypt (a site).** The decryptor decrypts the sum and returns it to the server, which
   decodes it like any other sum.

Two domains:

* **ring** (``bits`` set, the default): rows are integers of Z_2^bits (after
  :class:`~veil.aggregation.quantize.Quantize`, and
  :class:`~veil.aggregation.distributed_dp.DistributedDP` for hybrid HE + DP) taken as
  their centred representatives. The parameters are chosen so that the CKKS error of the
  sum is below 1/4 per slot (:func:`~veil.crypto.ckks.summation.sum_error_bound`) and the
  sum fits in ``bits + 1`` integer bits; the decryptor rounds each slot to the
  nearest integer, so the result is the **exact** integer sum (returned mod 2^bits, as
  SecAgg+ returns it). A slot further than 0.4 from an integer means the sum left the
  range (no honest cohort produces it) and the round is refused. Because the sum is exact,
  distributed discrete-Gaussian noise composes with it exactly as with SecAgg+ and is
  accounted by the same code.
* **float** (``bits=None, value_bound=V``): rows of floats with ``|x| ≤ V`` are summed with
  absolute error at most ``tolerance`` per coordinate (stated bound, tested).

Threat model (docs/ckks-aggregation.md): the server is honest-but-curious and never holds
the secret key; **every site does**, so a single site colluding with the server can decrypt
every other site's ciphertext. CKKS gives no integrity: a malicious server or decryptor can
change the sum.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from veil.aggregation.base import FLOAT, Domain, SumResult, expect, ring
from veil.crypto import ring as zring
from veil.crypto.ckks import CkksParams, EvaluationKeys, Evaluator, KeyOwner, check_security
from veil.crypto.ckks.summation import choose_sum_params, sum_error_bound
from veil.errors import AbortError, ConfigError, InvalidUpdateError, LocalError

__all__ = ["CkksSum", "CkksSite", "CkksServer", "provision_keys", "STAGES"]

#: points at which the simulation may drop a site
STAGES: tuple[str, ...] = ("before_send", "before_decrypt")
#: a ring-mode slot further than this from an integer is refused (the stated bound is 1/4)
_RESIDUAL_LIMIT = 0.4


def provision_keys(params: CkksParams) -> KeyOwner:
    """The federation's key pair, generated once and given to every site out of band.

    Raises:
        InsecureParametersError: ``params`` below 128-bit security.
    """
    return KeyOwner(params, relin=False)


class CkksSite:
    """A site's side: encrypt its row, and decrypt the sum when it is the decryptor.

    Args:
        site_id: the site's global id.
        owner: the shared key pair (provisioned out of band; never sent anywhere).
    """

    __slots__ = ("site_id", "_owner")

    def __init__(self, site_id: int, owner: KeyOwner) -> None:
        if not isinstance(owner, KeyOwner):
            raise LocalError("a CKKS site needs the provisioned KeyOwner")
        self.site_id = int(site_id)
        self._owner = owner

    def encrypt(self, row: np.ndarray) -> bytes:
        """Step 1: the row packed into ``⌈d / (2 · slots)⌉`` ciphertexts, framed.

        Raises:
            LocalError: the row holds NaN/inf.
        """
        per = 2 * self._owner.params.slots  # two values per complex slot
        v = np.asarray(row, dtype=np.float64).ravel()
        return self._owner.encrypt_pairs([v[i : i + per] for i in range(0, max(1, v.size), per)])

    def decrypt_sum(self, blob: bytes, dim: int) -> np.ndarray:
        """Step 3: the summed ciphertexts decrypted, the first ``dim`` values.

        Raises:
            IntegrityError: made under another key.
            MalformedMessageError: truncated or corrupted.
        """
        parts = self._owner.decrypt_pairs(blob)
        out = np.concatenate(parts) if parts else np.zeros(0)
        if out.size < dim:
            raise InvalidUpdateError(f"the summed ciphertexts hold {out.size} values, not {dim}")
        return out[:dim]

    def __repr__(self) -> str:
        return f"CkksSite({self.site_id}, secret key hidden)"

    def __reduce__(self) -> Any:
        raise TypeError("a CkksSite holds the federation's secret key and cannot be pickled")


class CkksServer:
    """The server's side: adds ciphertexts. Built from public evaluation keys only — it has
    no secret key, no decryptor, and :class:`~veil.crypto.ckks.Evaluator` refuses anything
    but :class:`~veil.crypto.ckks.EvaluationKeys`.

    Raises:
        TypeError: ``keys`` is not ``EvaluationKeys`` (e.g. a KeyOwner).
    """

    __slots__ = ("evaluator",)

    def __init__(self, keys: EvaluationKeys) -> None:
        self.evaluator = Evaluator(keys)

    def add(self, blobs: Iterable[bytes]) -> bytes:
        """Step 2: the slot-wise sum of the sites' ciphertexts, framed for the decryptor.

        The uploads are added as they come (an iterator is consumed one blob at a time:
        memory is one upload plus the running sum).

        Raises:
            AbortError: nothing to add.
            InvalidUpdateError: the sites sent different numbers of ciphertexts.
            IntegrityError, MalformedMessageError: a blob under another key, or corrupt.
        """
        ev = self.evaluator
        acc: list[Any] | None = None
        for b in blobs:
            cts = ev.load(b)
            if acc is None:
                acc = cts
                continue
            if len(cts) != len(acc):
                raise InvalidUpdateError(
                    f"a site sent {len(cts)} ciphertexts, another {len(acc)}: rows differ in width"
                )
            acc = [ev.add(a, c) for a, c in zip(acc, cts)]
        if acc is None:
            raise AbortError("no ciphertexts to add")
        return ev.dump(acc)

    def __repr__(self) -> str:
        return f"CkksServer({self.evaluator.keys!r})"


@dataclass(frozen=True)
class CkksSum:
    """CKKS summation (module docstring: steps, domains, threat model).

    Args:
        bits: ring width b of the integer rows (ring mode); ``None`` for float mode.
        value_bound: float mode: the largest |coordinate| of a row.
        max_sites: the most sites one sum may hold (the cohort size): sets scale and range.
        tolerance: float mode: the largest absolute error per coordinate of the sum
            (default ``2**-20 · max_sites · value_bound``). Ring mode always uses 1/4.
        params: explicit CKKS parameters instead of the chosen ones (checked: 128-bit and
            enough range and precision).
        min_survivors: fewest senders a sum may hold (2 would let each site subtract its own
            row from the sum and read the other's).
    """

    bits: int | None = 32
    value_bound: float | None = None
    max_sites: int = 100
    tolerance: float | None = None
    params: CkksParams | None = None
    min_survivors: int = 3
    name: str = "ckks"
    stages: ClassVar[tuple[str, ...]] = STAGES
    _keys: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.bits is None) == (self.value_bound is None):
            raise ConfigError(
                "CkksSum takes bits (integer rows) or value_bound (float rows), not both",
                key="aggregation.summation",
            )
        if self.bits is not None:
            zring.check_bits(self.bits)
        elif not (self.value_bound is not None and self.value_bound > 0
                  and math.isfinite(self.value_bound)):
            raise ConfigError("value_bound must be positive and finite", key="aggregation")
        if self.max_sites < 1 or self.min_survivors < 1:
            raise ConfigError("max_sites and min_survivors must be >= 1", key="aggregation")
        p = self.params if self.params is not None else choose_sum_params(
            self.max_sites, self.integer_bits, self.error_tolerance
        )
        check_security(p)
        if p.integer_bits < self.integer_bits or sum_error_bound(p, self.max_sites) > (
            self.error_tolerance
        ):
            raise ConfigError(
                f"CKKS parameters {p} hold {p.integer_bits} integer bits with error bound "
                f"{sum_error_bound(p, self.max_sites):.3g}; this sum needs {self.integer_bits} "
                f"bits and {self.error_tolerance:.3g}",
                key="aggregation.summation",
            )
        object.__setattr__(self, "params", p)

    # ------------------------------------------------------------ parameters
    @property
    def integer_bits(self) -> int:
        """Range of the sum above the scale: b + 1 (ring), or ⌈log2(n·V)⌉ + 2 (float)."""
        if self.bits is not None:
            return int(self.bits) + 1
        return max(1, math.ceil(math.log2(self.max_sites * float(self.value_bound or 1)))) + 2

    @property
    def error_tolerance(self) -> float:
        """The largest absolute error per coordinate the parameters guarantee for a sum."""
        if self.bits is not None:
            return 0.25
        if self.tolerance is not None:
            return float(self.tolerance)
        return 2.0**-20 * self.max_sites * float(self.value_bound or 1)

    @property
    def ckks_params(self) -> CkksParams:
        """The CKKS parameters in use (chosen or given; set at construction)."""
        if self.params is None:  # pragma: no cover - __post_init__ always sets them
            raise LocalError("CkksSum has no parameters")
        return self.params

    def error_bound(self, n_sites: int) -> float:
        """The stated error bound of a sum of ``n_sites`` rows (before ring-mode rounding)."""
        return sum_error_bound(self.ckks_params, n_sites)

    def domain(self, upstream: Domain) -> Domain:
        """Z_2^bits in and out (ring mode) or float vectors (float mode)."""
        want = ring(self.bits) if self.bits is not None else FLOAT
        expect(self.name, upstream, want)
        return upstream

    # ------------------------------------------------------------ parties
    def _owner(self) -> KeyOwner:
        if "owner" not in self._keys:
            self._keys["owner"] = provision_keys(self.ckks_params)
        return self._keys["owner"]  # type: ignore[no-any-return]

    def server(self) -> CkksServer:
        """The server's side (public evaluation keys only), built once per instance."""
        if "server" not in self._keys:
            self._keys["server"] = CkksServer(self._owner().evaluation_keys())
        return self._keys["server"]  # type: ignore[no-any-return]

    def site(self, site_id: int) -> CkksSite:
        """Site ``site_id``'s side, holding the provisioned key pair."""
        return CkksSite(site_id, self._owner())

    def _centred(self, row: np.ndarray) -> np.ndarray:
        if self.bits is not None:
            if not np.issubdtype(row.dtype, np.integer):
                raise LocalError("CkksSum(bits=...) sums integer rows; put a Quantize stage first")
            return zring.to_signed(row, self.bits).astype(np.float64)
        v = np.asarray(row, dtype=np.float64)
        if not np.all(np.abs(v) <= float(self.value_bound or 0)):
            raise LocalError(
                f"a row exceeds value_bound {self.value_bound} (or holds NaN): clip it first"
            )
        return v

    # ------------------------------------------------------------ the round
    def aggregate(
        self,
        encoded: np.ndarray,
        site_ids: np.ndarray,
        round: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> SumResult:
        """One CKKS round in process: sites encrypt, the server adds, a site decrypts.

        Args:
            encoded: one row per site.
            site_ids: global ids, one per row.
            round: round number (picks the decryptor).
            dropouts: ``{site: "before_send" | "before_decrypt"}``; a site silent before
                sending is not in the sum; one silent at decryption is in it but does not
                decrypt.

        Raises:
            ConfigError: unknown dropout stage.
            LocalError: rows of the wrong kind, or more rows than ``max_sites``.
            AbortError: fewer than ``min_survivors`` senders, or no sender left to decrypt.
            InvalidUpdateError: the decrypted sum is not a sum of in-range rows.
        """
        x = np.asarray(encoded)
        ids = [int(s) for s in np.asarray(site_ids)]
        if x.ndim != 2 or x.shape[0] != len(ids):
            raise LocalError("CkksSum needs a 2-D batch with one row per site id")
        if len(ids) > self.max_sites:
            raise LocalError(
                f"{len(ids)} rows but the CKKS parameters are sized for {self.max_sites}"
            )
        drops = dict(dropouts or {})
        bad = sorted({s for s in drops.values() if s not in STAGES})
        if bad:
            raise ConfigError(f"unknown CKKS dropout stage(s) {bad}; use {list(STAGES)}")
        senders = [i for i, s in enumerate(ids) if drops.get(s) != "before_send"]
        if len(senders) < self.min_survivors:
            raise AbortError(
                f"round {round}: {len(senders)} sites sent ciphertexts, fewer than "
                f"{self.min_survivors}; no sum is released"
            )
        d = x.shape[1]
        server = self.server()
        site_s: list[float] = []
        sent: dict[int, int] = {}
        received: dict[int, int] = {}

        def uploads() -> Iterator[bytes]:  # each site encrypts as the server takes its upload
            for i in senders:
                t0 = time.perf_counter()
                blob = self.site(ids[i]).encrypt(self._centred(x[i]))
                site_s.append(time.perf_counter() - t0)
                sent[ids[i]] = len(blob)
                yield blob

        t0 = time.perf_counter()
        total_ct = server.add(uploads())
        server_s = time.perf_counter() - t0 - sum(site_s)
        order = senders[round % len(senders) :] + senders[: round % len(senders)]
        dec = next((i for i in order if drops.get(ids[i]) != "before_decrypt"), None)
        if dec is None:
            raise AbortError(f"round {round}: every site that sent dropped before decrypting")
        t0 = time.perf_counter()
        values = self.site(ids[dec]).decrypt_sum(total_ct, d)
        decrypt_s = time.perf_counter() - t0
        received[ids[dec]] = len(total_ct)
        p = self.ckks_params
        meas: dict[str, float] = {
            "poly_degree": float(p.poly_degree),
            "scale_bits": float(p.scale_bits),
            "ciphertexts_per_site": float(-(-d // (2 * p.slots))),
            "error_bound": self.error_bound(len(senders)),
            "server_time_s": server_s,
            "site_time_max_s": max(site_s),
            "site_time_median_s": statistics.median(site_s),
            "decrypt_time_s": decrypt_s,
        }
        if self.bits is not None:
            rounded = np.rint(values)
            residual = float(np.max(np.abs(values - rounded), initial=0.0))
            meas["max_residual"] = residual
            if residual > _RESIDUAL_LIMIT or not np.all(np.isfinite(values)):
                raise InvalidUpdateError(
                    f"round {round}: the decrypted CKKS sum is {residual:.3g} from an integer "
                    "in some coordinate: a row was out of range or a ciphertext corrupt; the "
                    "aggregate is refused"
                )
            total: np.ndarray = zring.reduce(rounded.astype(np.int64), self.bits)
            reply = zring.packed_size(d, self.bits) + 16
        else:
            total = values
            reply = 8 * d + 16
        sent[ids[dec]] += reply  # the decryptor returns the plaintext sum to the server
        return SumResult(
            total=total,
            survivors=np.asarray([ids[i] for i in senders], dtype=np.int64),
            bytes_sent=sent,
            bytes_received=received,
            measurements=meas,
        )
