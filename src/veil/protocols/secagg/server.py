"""SecAgg+ server: a sans-IO state machine collecting one stage at a time.

Feed each site's bytes with :meth:`SecAggServer.receive` (the transport says which party
sent them: channels are authenticated), then call :meth:`SecAggServer.on_deadline` when
the stage's deadline passes; the next stage's messages are then in :meth:`outbox`.
At each close, fewer than t responders abort the round (:class:`~veil.errors.AbortError`
naming the stage and the counts); after the last stage :attr:`SecAggServer.result` holds
the sum of the survivors' inputs modulo 2^b, and nothing is released before that.

Unmasking (step 5): with U2 the sites that shared keys and U3 those whose masked input
arrived, ``Σ_{u∈U3} x_u = Σ_{u∈U3} y_u − Σ_{u∈U3} PRG(b_u)
− Σ_{u∈U2∖U3} Σ_{v∈U3, v holds u} sign(v,u)·PRG(s_uv)``, with b_u and s_u^SK rebuilt
from t shares.

Malicious-server mode (``config.roster`` set): advertisements are verified against the
roster and validated (low-order or copied keys: the site is dropped and named in
:attr:`SecAggServer.blamed`); the graph seed is the hash of the accepted advertisements'
digests; masked inputs are summed at the stage's close, without the sites whose share
ciphertexts a neighbour could not open; survivor-list signatures are verified and
forwarded to each site's neighbours; every rebuilt self-mask seed is checked against its
commitment and every mask key against its advertised public key, wrong shares are found
among all received shares, their holders named, and the shares ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from veil.crypto import ring, shamir
from veil.crypto.ka import KeyPair
from veil.crypto.identity import verify
from veil.errors import AbortError, IntegrityError, PeerError, ProtocolError
from veil.protocols.secagg import messages as m
from veil.protocols.secagg import signing as sg
from veil.protocols.secagg.client import add_masks, mask_seed
from veil.protocols.machine import Machine
from veil.protocols.secagg.config import SERVER, SERVER_ID, SecAggConfig, site_name, site_of
from veil.protocols.secagg.transitions import TABLE, Role, State

__all__ = ["SecAggServer", "SecAggOutput"]


@dataclass(frozen=True)
class SecAggOutput:
    """The released result of one round.

    Attributes:
        total: Σ of the survivors' inputs mod 2^b (uint64, length d).
        survivors: sorted ids whose inputs are in ``total`` (U3).
        stage_counts: responders per stage (U1..U5 sizes).
        words_expanded: PRG words the server expanded to unmask.
        blamed: site → what it did wrong (invalid or copied keys, ciphertexts that did not
            open, wrong shares); such sites were dropped or their shares ignored.
        graph_seed: the round's graph seed (joint, from the signed advertisements, in the
            malicious-server mode) — record it with the round.
    """

    total: np.ndarray = field(repr=False)
    survivors: tuple[int, ...]
    stage_counts: dict[str, int]
    words_expanded: int
    blamed: dict[int, str] = field(default_factory=dict)
    graph_seed: bytes = b""


class SecAggServer(Machine):
    """The aggregator for one round.

    Args:
        config: the round's public parameters.
    """

    table = TABLE
    role = Role.SERVER

    def __init__(self, config: SecAggConfig) -> None:
        super().__init__(SERVER)
        self.config = config
        self._cohort = frozenset(config.site_ids)
        # malicious mode: the graph exists only once the keys are committed (_close_keys)
        self._graph: dict[int, frozenset[int]] = {} if config.malicious else config.graph()
        self.graph_seed = b"" if config.malicious else config.graph_seed
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._adverts: dict[int, m.AdvertiseKeys] = {}
        self._probe = KeyPair.generate()  # to validate advertised keys (low-order points)
        self._digests: dict[int, bytes] = {}
        self._bad: dict[int, frozenset[int]] = {}
        self._payloads: dict[int, bytes] = {}
        self._u3_statement = b""
        #: site → why it was dropped or its shares ignored (bad keys, ciphertexts, shares)
        self.blamed: dict[int, str] = {}
        self._listed: dict[int, frozenset[int]] = {}
        self._cts: dict[int, dict[int, bytes]] = {}
        self._relayed: dict[int, frozenset[int]] = {}
        self._sum = np.zeros(config.dim, dtype=ring.ring_dtype(config.bits))
        self._masked: set[int] = set()
        self._u3: tuple[int, ...] = ()
        self._acks: dict[int, dict[int, bytes]] = {}
        self._asked: dict[int, tuple[frozenset[int], frozenset[int]]] = {}
        self._shares: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._answered: set[int] = set()
        self.counts: dict[str, int] = {}
        self.errors: list[tuple[int | str, str, str]] = []
        self.result: SecAggOutput | None = None

    def __repr__(self) -> str:
        return f"SecAggServer(round={self.config.round}, state={State(self.state).value})"

    __str__ = __repr__

    @property
    def waiting_for(self) -> frozenset[str]:
        """Sites the current stage still expects an answer from."""
        expected: set[int] | frozenset[int]
        got: object
        if self.state is State.COLLECT_KEYS:
            expected, got = set(self._cohort), self._keys
        elif self.state is State.COLLECT_SHARES:
            expected, got = set(self._listed), self._cts
        elif self.state is State.COLLECT_MASKED:
            expected, got = set(self._relayed), self._masked
        elif self.state is State.COLLECT_CHECKS:
            expected, got = set(self._u3), self._acks
        elif self.state is State.COLLECT_UNMASK:
            expected, got = set(self._asked), self._answered
        else:
            return frozenset()
        return frozenset(site_name(u) for u in expected if u not in got)  # type: ignore[operator]

    # ---- public API (the party interface of veil.protocols.machine) ------------------
    def receive(self, sender: str, data: bytes) -> None:
        """Take one message from the party ``sender``.

        A message that is malformed, replayed, out of stage or inconsistent is refused
        with a :class:`~veil.errors.PeerError` subclass; the server stays in its state and
        the peer simply counts as silent for the stage (the round goes on with the others).

        Raises:
            MalformedMessageError, IntegrityError, ProtocolError: the peer misbehaved.
        """
        stage = self.stage
        try:
            peer = site_of(sender)
            if peer not in self._cohort:
                raise ProtocolError("sender is not in this round's cohort", peer=peer)
            msg = m.decode(data, self.config)
            if msg.sender != peer:
                raise ProtocolError("header names another sender", peer=peer)
            self._dispatch(type(msg).__name__, peer, msg, sender=sender)
        except PeerError as exc:
            self.errors.append((sender, stage, type(exc).__name__))
            raise

    # ---- helpers --------------------------------------------------------------------
    def _post(self, to: str, msg: m.Message) -> None:
        """Queue ``msg`` (padded to its type's size when the round pads messages)."""
        self._send(to, m.encode(msg, self.config))

    def _need(self, stage: str, have: int) -> None:
        self.counts[stage] = have
        if have < self.config.threshold:
            raise AbortError(
                f"round {self.config.round} aborted at stage {stage}: {have} of "
                f"{self.config.n} sites responded, threshold {self.config.threshold}"
            )

    def _on_start(self) -> None:
        """The server sends nothing first: sites open the round."""

    def _no_repeat(self, peer: int, seen: object) -> None:
        if peer in seen:  # type: ignore[operator]
            raise ProtocolError(f"second message in stage {self.stage}", peer=peer)

    # ---- step 1 ---------------------------------------------------------------------
    def _on_advertise(self, peer: int, msg: m.AdvertiseKeys) -> None:
        self._no_repeat(peer, self._keys)
        cfg = self.config
        for pk in (msg.enc_pk, msg.mask_pk):
            if not self._probe.accepts(pk):
                self.blamed[peer] = "advertised an invalid (low-order) public key"
                raise IntegrityError("advertised an invalid (low-order) public key", peer=peer)
        if cfg.roster is not None:
            stmt = sg.advert_statement(
                cfg.session, cfg.round, peer, msg.enc_pk, msg.mask_pk, msg.commit
            )
            verify(cfg.roster.key_of(peer), stmt, msg.sig, who=peer)  # Sybil, substitution
            self._digests[peer] = sg.advert_digest(stmt, msg.sig)
        self._keys[peer] = (msg.enc_pk, msg.mask_pk)
        self._adverts[peer] = msg

    def _drop_copied_keys(self) -> None:
        """Sites whose public keys repeat another's (a copied key) leave the round, named."""
        seen: dict[bytes, list[int]] = {}
        for u, pair in self._keys.items():
            for pk in set(pair) if pair[0] != pair[1] else (pair[0], pair[0]):
                seen.setdefault(pk, []).append(u)
        for users in seen.values():
            if len(users) > 1:
                for u in users:
                    self.blamed[u] = "advertised a public key that another key repeats"
        for u in [u for u in self._keys if u in self.blamed]:
            del self._keys[u]
            self._digests.pop(u, None)

    def _close_keys(self) -> None:
        cfg = self.config
        self._drop_copied_keys()
        u1 = set(self._keys)
        self._need("advertise", len(u1))
        digests: tuple[tuple[int, bytes], ...] = ()
        if cfg.malicious:
            digests = tuple(sorted(self._digests.items()))
            self.graph_seed = cfg.joint_graph_seed(digests)
            self._graph = cfg.graph(self.graph_seed)
        for u in sorted(u1):
            self._listed[u] = frozenset(self._graph[u] & u1)
            keys = tuple(
                (v, *self._keys[v], self._adverts[v].commit, self._adverts[v].sig)
                for v in sorted(self._listed[u] | {u})
            )
            self._post(site_name(u), m.KeyBroadcast(cfg.round, SERVER_ID, keys, digests))

    # ---- step 2 ---------------------------------------------------------------------
    def _on_shares(self, peer: int, msg: m.ShareKeys) -> None:
        self._no_repeat(peer, self._cts)
        if peer not in self._listed:
            raise ProtocolError("shares from a site that did not advertise keys", peer=peer)
        if {v for v, _ in msg.cts} != self._listed[peer]:
            raise ProtocolError("shares must go to exactly the listed neighbours", peer=peer)
        self._cts[peer] = dict(msg.cts)

    def _close_shares(self) -> None:
        u2 = set(self._cts)
        self._need("share", len(u2))
        for v in sorted(u2):
            senders = sorted(u for u in self._graph[v] & u2 if v in self._cts[u])
            self._relayed[v] = frozenset(senders)
            cts = tuple((u, self._cts[u][v]) for u in senders)
            self._post(site_name(v), m.ShareRelay(self.config.round, SERVER_ID, cts))

    # ---- step 3 ---------------------------------------------------------------------
    def _on_masked(self, peer: int, msg: m.MaskedInput) -> None:
        self._no_repeat(peer, self._masked)
        if peer not in self._relayed:
            raise ProtocolError("masked input from a site that was sent no shares", peer=peer)
        cfg = self.config
        if not set(msg.bad) <= self._relayed[peer]:
            raise ProtocolError("names bad ciphertexts it was never sent", peer=peer)
        if cfg.malicious:  # summed at the close, once every accusation is in
            self._payloads[peer] = msg.payload
        else:
            self._sum += ring.unpack(msg.payload, cfg.dim, cfg.bits, self._sum.dtype.type)
        self._masked.add(peer)
        self._bad[peer] = frozenset(msg.bad)

    def _close_masked(self) -> None:
        cfg = self.config
        if cfg.malicious:
            # a site whose share ciphertexts did not open at some neighbour is named and
            # leaves the round as if it dropped after sharing: its input is not summed
            # (nobody masked with it where its shares were bad; its mask key is rebuilt from
            # the holders that could open them)
            for v in sorted(self._masked):
                for u in self._bad[v]:
                    self.blamed.setdefault(u, f"sent site {v} a share ciphertext that did not open")
            self._masked -= set(self.blamed)
            for u in sorted(self._masked):
                self._sum += ring.unpack(
                    self._payloads[u], cfg.dim, cfg.bits, self._sum.dtype.type
                )
            self._payloads.clear()
        self._need("masked", len(self._masked))
        self._u3 = tuple(sorted(self._masked))
        if cfg.malicious:  # what every survivor signs, hashed once
            self._u3_statement = sg.survivors_statement(cfg.session, cfg.round, self._u3)
        data = m.encode(m.SurvivorList(self.config.round, SERVER_ID, self._u3), self.config)
        for u in self._u3:
            self._send(site_name(u), data)

    # ---- step 4 ---------------------------------------------------------------------
    def _on_ack(self, peer: int, msg: m.ConsistencyAck) -> None:
        self._no_repeat(peer, self._acks)
        if peer not in self._masked:
            raise ProtocolError("consistency tags from a site that is not a survivor", peer=peer)
        cfg = self.config
        if cfg.roster is not None:
            verify(cfg.roster.key_of(peer), self._u3_statement, msg.tags[0][1], who=peer)
        elif {v for v, _ in msg.tags} != self._held(peer) & self._masked:
            raise ProtocolError("consistency tags must go to the surviving neighbours", peer=peer)
        self._acks[peer] = dict(msg.tags)

    def _held(self, v: int) -> frozenset[int]:
        """Sites whose shares ``v`` holds (it was relayed and could open their ciphertexts)."""
        return self._relayed[v] - self._bad.get(v, frozenset())

    def _close_checks(self) -> None:
        u4 = sorted(self._acks)
        self._need("consistency", len(u4))
        malicious = self.config.malicious
        for v in u4:
            held = self._held(v)
            seed_of = held & self._masked
            key_of = held - self._masked
            self._asked[v] = (seed_of, key_of)
            # O(k) per site: only v's graph neighbours can carry a tag or signature for v
            near = sorted(u for u in self._graph[v] if u in self._acks)
            if malicious:
                tags = tuple((u, self._acks[u][u]) for u in near)
            else:
                tags = tuple((u, self._acks[u][v]) for u in near if v in self._acks[u])
            self._post(site_name(v), m.UnmaskRequest(
                self.config.round, SERVER_ID, tuple(sorted(seed_of)), tuple(sorted(key_of)), tags
            ))

    # ---- step 5 ---------------------------------------------------------------------
    def _on_unmask_response(self, peer: int, msg: m.UnmaskResponse) -> None:
        self._no_repeat(peer, self._answered)
        if peer not in self._asked:
            raise ProtocolError("shares from a site that was not asked", peer=peer)
        seed_of, key_of = self._asked[peer]
        got = {(u, k) for u, k, _ in msg.shares}
        want = {(u, m.SELF_SEED) for u in seed_of} | {(u, m.MASK_KEY) for u in key_of}
        if got != want:
            raise ProtocolError("unmask response does not answer the request", peer=peer)
        parsed = [(u, k, shamir.decode_y(y)) for u, k, y in msg.shares]
        for u, k, y in parsed:
            self._shares.setdefault((u, k), []).append((peer + 1, y))
        self._answered.add(peer)

    def _rebuild(self, u: int, kind: int, check: Callable[[bytes], bool] | None) -> bytes:
        """Secret ``kind`` of site ``u`` from its holders' shares; with a ``check`` (seed
        commitment, advertised public key) wrong shares are found, named and ignored."""
        # canonical order (by holder): the first t shares then lie at the same points for
        # every secret whose t lowest holders coincide, and the Lagrange coefficients of
        # those points are computed once (shamir caches them per point set)
        shares = sorted(self._shares[(u, kind)])
        t = self.config.threshold
        if check is None:
            return shamir.combine(shares, t)
        what = "self-mask seed" if kind == m.SELF_SEED else "mask key"
        try:
            secret, wrong = shamir.combine_verified(shares, t, check)
        except AbortError as exc:
            raise AbortError(
                f"round {self.config.round} aborted at stage unmask: the {what} of site {u} "
                f"cannot be rebuilt from its {len(shares)} shares ({exc})"
            ) from None
        for x in wrong:
            self.blamed[x - 1] = f"revealed a wrong share of site {u}'s {what}"
        return secret

    def _seed_check(self, u: int) -> Callable[[bytes], bool] | None:
        cfg = self.config
        if not cfg.malicious:
            return None
        commit = self._adverts[u].commit
        return lambda b: sg.seed_commitment(cfg.session, cfg.round, u, b) == commit

    def _key_check(self, u: int) -> Callable[[bytes], bool]:
        public = self._keys[u][1]
        return lambda raw: KeyPair.from_private_bytes(raw).public == public

    def _close_unmask(self) -> None:
        cfg = self.config
        self._need("unmask", len(self._answered))
        # dropped after sharing, with the surviving neighbours that masked with them
        holders = {
            u: sorted(v for v in self._graph[u] if v in self._masked
                      and u in self._relayed[v] and u not in self._bad[v])
            for u in sorted(set(self._relayed) - self._masked)
        }
        dropped = [u for u, hs in holders.items() if hs]
        needs = [(u, m.SELF_SEED) for u in self._u3] + [(u, m.MASK_KEY) for u in dropped]
        short = [(u, k) for u, k in needs if len(self._shares.get((u, k), ())) < cfg.threshold]
        if short:
            worst = min(len(self._shares.get(key, ())) for key in short)
            raise AbortError(
                f"round {cfg.round} aborted at stage unmask: {len(short)} of {len(needs)} "
                f"secrets have fewer than {cfg.threshold} shares (fewest: {worst}); "
                f"{len(self._answered)} sites answered"
            )
        total = self._sum
        words = add_masks(
            total, ((self._rebuild(u, m.SELF_SEED, self._seed_check(u)), -1) for u in self._u3)
        )
        for u in dropped:
            kp = KeyPair.from_private_bytes(self._rebuild(u, m.MASK_KEY, self._key_check(u)))
            # v added sign(v,u)·PRG(s_uv) with sign + for v < u: remove it
            words += add_masks(
                total,
                ((mask_seed(kp, self._keys[v][1], cfg.round), -1 if v < u else 1)
                 for v in holders[u]),
            )
        total = total.astype(np.uint64) & ring.ring_mask(cfg.bits)
        self.counts["dropped_after_sharing"] = len(dropped)
        self.result = SecAggOutput(
            total, self._u3, dict(self.counts), words, dict(self.blamed), self.graph_seed
        )
