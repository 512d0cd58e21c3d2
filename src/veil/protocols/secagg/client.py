"""SecAgg+ site: a sans-IO state machine (bytes in → bytes out).

Steps (see :mod:`~veil.protocols.secagg.transitions` for the table):

1. ``start()``: draw two X25519 key pairs (c for encryption, s for masking) and a 32-byte
   self-mask seed b; send both public keys.
2. On the neighbours' keys: Shamir-share b and s^SK (t-of-k, points x = id + 1) and send
   each neighbour v its pair of shares sealed with AES-GCM under HKDF(X25519(c_u, c_v)),
   the associated data binding (round, u, v).
3. On the relayed ciphertexts (the neighbours U2 that shared): open them, then send
   ``y = x + PRG(b) + Σ_{v∈U2∩N(u)} ±PRG(s_uv) mod 2^b`` with s_uv = HKDF(X25519(s_u, s_v))
   and sign + for u < v, − otherwise. PRG is AES-CTR keyed by the seed: 32-bit words
   (:func:`veil.crypto.prg.prg_uint32`) when b ≤ 32, else 64-bit words
   (:func:`veil.crypto.prg.prg_uint64`); either is uniform modulo 2^b.
4. On the survivor list U3: check it (contains u, ≥ t sites) and send, for each surviving
   neighbour, an HMAC of U3 under the pairwise key — the neighbours compare lists.
5. On the unmask request: refuse unless the request matches U3 (self-seed shares only
   for survivors, key shares only for dropped neighbours, never both for one peer) and
   every neighbour's tag matches our U3; then reveal exactly those shares.

Malicious-server mode (``config.roster`` set; the site holds its enrolled
:class:`~veil.crypto.identity.SiteIdentity`): step 1 also commits to b and signs the
advertisement (:mod:`~veil.protocols.secagg.signing`); step 2 first derives the graph from
the digests of all committed advertisements and verifies every neighbour's signature
against the roster; step 3 names (and neither holds nor masks with) neighbours whose
ciphertexts do not open; step 4 signs the survivor list; step 5 reveals nothing without
valid signatures on this site's own list from at least t neighbours.

Any exception moves the machine to ``ERROR``; a site in ``ERROR`` is simply silent.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable

import numpy as np

from veil.crypto import aead, ring, shamir
from veil.crypto.ka import KeyPair
from veil.crypto.identity import SiteIdentity, verify
from veil.crypto.prg import derive_key, derive_keys
from veil.errors import AbortError, IntegrityError, LocalError, ProtocolError
from veil.protocols.secagg import messages as m
from veil.protocols.secagg import signing as sg
from veil.protocols.machine import Machine
from veil.protocols.secagg.config import SERVER, SERVER_ID, SecAggConfig, site_name
from veil.protocols.secagg.transitions import TABLE, Role, State

__all__ = ["SecAggClient", "add_masks", "mask_seed", "survivor_digest"]


def add_masks(acc: np.ndarray, seeds: Iterable[tuple[bytes, int]]) -> int:
    """In place: ``acc += sign · PRG(seed, len(acc))`` for each (seed, ±1).

    The word size follows ``acc``: ``uint64`` adds ``prg_uint64`` words (modulo 2**64),
    ``uint32`` adds ``prg_uint32`` words (modulo 2**32, half the keystream; for b ≤ 32).
    Reduce to b bits afterwards. The keystreams go through one reusable
    :class:`~veil.crypto.ring.PrgBuffer`. Returns the number of words expanded.

    Raises:
        LocalError: if ``acc`` is not a uint32 or uint64 vector.
    """
    if acc.ndim != 1 or acc.dtype not in (np.uint32, np.uint64):
        raise LocalError("masks are added to a uint32 or uint64 vector")
    d, words = acc.shape[0], 0
    buf: ring.PrgBuffer | None = None
    for seed, sign in seeds:
        buf = buf or ring.PrgBuffer(d, acc.dtype.itemsize)
        mask = buf.fill(seed)
        if sign > 0:
            np.add(acc, mask, out=acc)
        else:
            np.subtract(acc, mask, out=acc)
        words += d
    return words


def mask_seed(own: KeyPair, peer_public: bytes, round: int) -> bytes:
    """Pairwise mask seed s_uv = HKDF(X25519(s_u, s_v)) for ``round`` (symmetric)."""
    return derive_key(own.exchange(peer_public), f"veil/secagg/v1/mask/{round}")


def _channel_keys(own: KeyPair, peer_public: bytes, round: int) -> tuple[bytes, bytes]:
    """(AES-GCM key, HMAC key) of a pair: one X25519, one HKDF-Extract, two Expands."""
    enc, mac = derive_keys(
        own.exchange(peer_public), (f"veil/secagg/v1/enc/{round}", f"veil/secagg/v1/mac/{round}")
    )
    return enc, mac


def survivor_digest(round: int, survivors: Iterable[int]) -> bytes:
    """The bytes a site MACs to vouch for the survivor list it received."""
    return b"veil/secagg/v1/survivors" + m.SurvivorList(round, SERVER_ID, tuple(survivors)).body()


class SecAggClient(Machine):
    """One site in one round (party name ``str(site_id)``; the server is ``"server"``).

    Args:
        config: the round's public parameters.
        site_id: this site's id (in ``config.site_ids``).
        value: the site's input, an integer vector of length ``config.dim`` (reduced mod 2^b),
            or a zero-argument callable returning it when step 3 needs it (keeps memory
            low when many sites are simulated in one process).

        identity: the site's enrolled signing key (required in the malicious-server mode,
            when ``config.roster`` is set).

    Raises:
        LocalError: if the site is not in the cohort, the input has the wrong shape, or the
            identity is not the one the roster enrols.
    """

    table = TABLE
    role = Role.CLIENT

    def __init__(
        self,
        config: SecAggConfig,
        site_id: int,
        value: np.ndarray | Callable[[], np.ndarray],
        identity: SiteIdentity | None = None,
    ) -> None:
        if site_id not in config.site_ids:
            raise LocalError(f"site {site_id} is not in this round's cohort")
        if not callable(value):
            self._check_input(value, config.dim)
        if identity is not None and (
            identity.site_id != site_id
            or config.roster is None
            or config.roster.keys.get(int(site_id)) != identity.public
        ):
            raise LocalError(f"identity of site {site_id} is not the one the roster enrols")
        super().__init__(site_name(site_id))
        self._identity = identity
        self._digest = b""
        #: graph seed of this round as this site derived it (malicious mode) or was given
        self.graph_seed = config.graph_seed
        self.config = config
        self.site_id = int(site_id)
        self._value = value
        self._nbrs = frozenset() if config.malicious else config.neighbours_of(self.site_id)
        self._enc: KeyPair | None = None
        self._mask: KeyPair | None = None
        self._seed = b""
        self._peer_keys: dict[int, tuple[bytes, bytes]] = {}
        self._chan: dict[int, tuple[bytes, bytes]] = {}
        self._held: dict[int, tuple[bytes, bytes]] = {}
        self._survivors: frozenset[int] = frozenset()
        self._bad: frozenset[int] = frozenset()
        self.words_expanded = 0

    def __repr__(self) -> str:
        cfg = self.config
        return f"SecAggClient(site={self.site_id}, round={cfg.round}, state={State(self.state).value})"

    __str__ = __repr__

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("SecAggClient holds secrets and cannot be pickled")

    # ---- public API (the party interface of veil.protocols.machine) ------------------
    def receive(self, sender: str, data: bytes) -> None:
        """Handle one server message; the reply is queued in :meth:`outbox`.

        Raises:
            MalformedMessageError, IntegrityError, ProtocolError: the server (or the link)
                misbehaved; the machine is now in ``ERROR``.
            AbortError: the round cannot go on safely from this site's view.
        """
        try:
            if sender != SERVER:
                raise ProtocolError("sites take messages from the server only", peer=sender)
            msg = m.decode(data, self.config)
            if msg.sender != SERVER_ID:
                raise ProtocolError("message does not come from the server", peer=sender)
        except BaseException:
            self._fail()
            raise
        self._dispatch(type(msg).__name__, msg, sender=sender)

    @staticmethod
    def _check_input(value: np.ndarray, dim: int) -> np.ndarray:
        value = np.asarray(value)
        if value.shape != (dim,) or not np.issubdtype(value.dtype, np.integer):
            raise LocalError(f"input must be an integer vector of length {dim}")
        return value

    def _post(self, to: str, msg: m.Message) -> None:
        """Queue ``msg`` (padded to its type's size when the round pads messages)."""
        self._send(to, m.encode(msg, self.config))

    # ---- handlers -------------------------------------------------------------------
    def _keypairs(self) -> tuple[KeyPair, KeyPair]:
        if self._enc is None or self._mask is None:
            raise LocalError("keys used before step 1")
        return self._enc, self._mask

    def _sign(self, statement: bytes) -> bytes:
        if self._identity is None:
            raise LocalError("a malicious-server round needs this site's identity")
        return self._identity.sign(statement)

    def _on_start(self) -> None:
        cfg, me = self.config, self.site_id
        self._enc, self._mask = KeyPair.generate(), KeyPair.generate()
        self._seed = secrets.token_bytes(32)
        commit = sig = b""
        if cfg.malicious:
            commit = sg.seed_commitment(cfg.session, cfg.round, me, self._seed)
            stmt = sg.advert_statement(
                cfg.session, cfg.round, me, self._enc.public, self._mask.public, commit
            )
            sig = self._sign(stmt)
            self._digest = sg.advert_digest(stmt, sig)
        self._post(SERVER, m.AdvertiseKeys(
            cfg.round, me, self._enc.public, self._mask.public, commit, sig
        ))

    def _check_adverts(self, msg: m.KeyBroadcast) -> None:
        """Malicious-server mode: derive the graph from the committed advertisements and
        check every neighbour's advertisement against its enrolled key and its digest."""
        cfg, me = self.config, self.site_id
        digests = dict(msg.digests)
        if digests.get(me) != self._digest:
            raise IntegrityError(
                "this site's advertisement is not among the committed ones", peer=SERVER
            )
        self.graph_seed = cfg.joint_graph_seed(msg.digests)
        self._nbrs = cfg.graph(self.graph_seed)[me]
        roster = cfg.roster
        if roster is None:  # pragma: no cover - malicious implies a roster
            raise LocalError("no roster")
        for v, c, s, commit, sig in msg.keys:
            if v == me:
                continue
            stmt = sg.advert_statement(cfg.session, cfg.round, v, c, s, commit)
            verify(roster.key_of(v), stmt, sig, who=v)  # key substitution, Sybil, replay
            if digests.get(v) != sg.advert_digest(stmt, sig):
                raise IntegrityError("advertisement differs from the committed one", peer=v)

    def _on_keys(self, msg: m.KeyBroadcast) -> None:
        cfg, me = self.config, self.site_id
        enc, mask = self._keypairs()
        if cfg.malicious:
            self._check_adverts(msg)
        keys = {i: (c, s) for i, c, s, _, _ in msg.keys}
        if keys.get(me) != (enc.public, mask.public):
            raise ProtocolError("key list does not carry this site's own keys", peer="server")
        peers = set(keys) - {me}
        if not peers <= self._nbrs:
            raise ProtocolError("key list names sites that are not neighbours", peer="server")
        pubs = [k for pair in keys.values() for k in pair]
        if len(set(pubs)) != len(pubs):
            raise ProtocolError("key list repeats a public key", peer="server")
        if len(peers) < cfg.threshold:
            raise AbortError(
                f"stage share: site {me} has {len(peers)} neighbours with keys, "
                f"threshold {cfg.threshold}"
            )
        order = sorted(peers)
        self._peer_keys = {v: keys[v] for v in order}
        xs = [v + 1 for v in order]
        b_sh = shamir.split(self._seed, cfg.threshold, xs)
        s_sh = shamir.split(mask.private_bytes(), cfg.threshold, xs)
        cts = []
        for v, (_, yb), (_, ys) in zip(order, b_sh, s_sh):
            self._chan[v] = _channel_keys(enc, keys[v][0], cfg.round)  # IntegrityError: low order
            plain = (
                me.to_bytes(4, "little") + v.to_bytes(4, "little")
                + shamir.encode_y(yb) + shamir.encode_y(ys)
            )
            ad = aead.bind("veil/secagg/v1/share", cfg.round, me, v)
            cts.append((v, aead.seal(self._chan[v][0], plain, ad)))
        self._post(SERVER, m.ShareKeys(cfg.round, me, tuple(cts)))

    def _open_share(self, u: int, ct: bytes) -> tuple[bytes, bytes]:
        cfg, me = self.config, self.site_id
        plain = aead.open_sealed(
            self._chan[u][0], ct, aead.bind("veil/secagg/v1/share", cfg.round, u, me)
        )
        if plain[:4] != u.to_bytes(4, "little") or plain[4:8] != me.to_bytes(4, "little"):
            raise ProtocolError("share addressed to another pair", peer=u)
        return plain[8 : 8 + shamir.SHARE_BYTES], plain[8 + shamir.SHARE_BYTES :]

    def _on_relay(self, msg: m.ShareRelay) -> None:
        cfg, me = self.config, self.site_id
        _, mask = self._keypairs()
        relayed, bad = [], []
        for u, ct in msg.cts:
            if u not in self._chan:
                raise ProtocolError(
                    f"ciphertext from site {u}, not a keyed neighbour", peer="server"
                )
            relayed.append(u)
            try:
                self._held[u] = self._open_share(u, ct)
            except (IntegrityError, ProtocolError):
                if not cfg.malicious:
                    raise
                bad.append(u)  # malicious mode: hold nothing of u, name it, keep going
        self._bad = frozenset(bad)
        if len(relayed) < cfg.threshold:
            raise AbortError(
                f"stage masked: site {me} received shares from {len(relayed)} neighbours, "
                f"threshold {cfg.threshold}"
            )
        # no pairwise mask with a neighbour whose shares did not open: the server takes
        # that neighbour out of the sum (malicious mode)
        seeds = [(self._seed, 1)] + [
            (mask_seed(mask, self._peer_keys[u][1], cfg.round), 1 if me < u else -1)
            for u in sorted(set(relayed) - set(bad))
        ]
        raw = self._value() if callable(self._value) else self._value
        # a fresh array in the ring's word (uint32 for b ≤ 32); pack reduces to b bits
        y = self._check_input(raw, cfg.dim).astype(ring.ring_dtype(cfg.bits))
        self._value = np.zeros(0, dtype=np.uint64)
        self.words_expanded += add_masks(y, seeds)
        self._post(SERVER, m.MaskedInput(
            cfg.round, me, ring.pack(y, cfg.bits), tuple(sorted(bad))
        ))

    def _on_survivors(self, msg: m.SurvivorList) -> None:
        cfg, me = self.config, self.site_id
        u3 = frozenset(msg.survivors)
        if me not in u3:
            raise ProtocolError(
                "survivor list omits this site, which sent its input", peer="server"
            )
        if not u3 <= set(cfg.site_ids):
            raise ProtocolError("survivor list names sites outside the cohort", peer="server")
        if len(u3) < cfg.threshold:
            raise AbortError(
                f"stage consistency: {len(u3)} survivors, threshold {cfg.threshold}"
            )
        self._survivors = u3
        if cfg.malicious:
            sig = self._sign(sg.survivors_statement(cfg.session, cfg.round, u3))
            self._post(SERVER, m.ConsistencyAck(cfg.round, me, ((me, sig),)))
            return
        digest = survivor_digest(cfg.round, msg.survivors)
        tags = tuple((v, aead.mac(self._chan[v][1], digest)) for v in sorted(u3 & set(self._held)))
        self._post(SERVER, m.ConsistencyAck(cfg.round, me, tags))

    def _check_signed_lists(self, msg: m.UnmaskRequest) -> None:
        """Malicious-server mode: valid signatures on *this site's* list from ≥ t distinct
        neighbours, or nothing is revealed. Signatures that do not verify (over another
        list, or forged) are not counted; verification stops at t valid ones."""
        cfg, u3 = self.config, self._survivors
        roster = cfg.roster
        if roster is None:  # pragma: no cover - malicious implies a roster
            raise LocalError("no roster")
        stmt = sg.survivors_statement(cfg.session, cfg.round, u3)
        signers: set[int] = set()
        for v, sig in msg.tags:
            if v not in self._nbrs or v not in u3:
                raise ProtocolError(f"survivor-list signature from non-neighbour {v}", peer=SERVER)
            if len(signers) >= cfg.threshold:
                break
            try:
                verify(roster.key_of(v), stmt, sig, who=v)
            except IntegrityError:
                continue  # signed another list (split view) or forged: does not count
            signers.add(v)
        if len(signers) < cfg.threshold:
            raise ProtocolError(
                f"only {len(signers)} neighbours signed this site's survivor list, "
                f"{cfg.threshold} required; nothing revealed", peer=SERVER,
            )

    def _on_unmask(self, msg: m.UnmaskRequest) -> None:
        cfg, me, u3 = self.config, self.site_id, self._survivors
        seed_of, key_of = set(msg.seed_of), set(msg.key_of)
        both = seed_of & key_of
        if both:
            raise ProtocolError(
                f"server asked for both secrets of {len(both)} peer(s); refused", peer="server"
            )
        held = set(self._held)
        if not seed_of <= (u3 & held) or not key_of <= (held - u3):
            raise ProtocolError(
                "unmask request is inconsistent with the survivor list; refused", peer="server"
            )
        if cfg.malicious:
            self._check_signed_lists(msg)
        else:
            digest = survivor_digest(cfg.round, sorted(u3))
            for u, tag in msg.tags:
                if u not in u3 or u not in held:
                    raise ProtocolError(f"consistency tag from unexpected site {u}", peer="server")
                aead.check_mac(self._chan[u][1], digest, tag)  # IntegrityError: lists differ
        shares = sorted(
            [(u, m.SELF_SEED, self._held[u][0]) for u in seed_of]
            + [(u, m.MASK_KEY, self._held[u][1]) for u in key_of]
        )
        self._held.clear()  # never reveal anything again this round
        self._post(SERVER, m.UnmaskResponse(cfg.round, me, tuple(shares)))
