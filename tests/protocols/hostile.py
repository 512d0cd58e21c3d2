"""A hostile SecAgg+ server of our own (not the normal driver) and its reconstruction attempt.

The adversary drives veil's honest :class:`SecAggClient` machines directly: it decides what
each site sees (keys, relays, survivor lists, requests), reads the internals of the sites
it corrupts (colluding sites give it everything they hold), and then tries to rebuild one
target's input from everything it has. :meth:`HostileServer.reconstruct` returns the
target's input if the adversary has enough, else ``None``; the tests assert it fails.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from veil.crypto import ring, shamir
from veil.crypto.ka import KeyPair
from veil.errors import VeilError
from veil.protocols.secagg import SERVER, SERVER_ID, SecAggClient, SecAggConfig
from veil.protocols.secagg import messages as m
from veil.protocols.secagg.client import add_masks, mask_seed


class HostileServer:
    """Holds the honest clients and what the adversary learned.

    Args:
        cfg: the round's parameters (as the clients have them).
        clients: every site's machine (honest code; corrupt ones are read from inside).
        corrupt: ids of the sites colluding with the server.
    """

    def __init__(self, cfg: SecAggConfig, clients: dict[int, SecAggClient],
                 corrupt: set[int] | frozenset[int] = frozenset()) -> None:
        self.cfg, self.clients, self.corrupt = cfg, clients, set(corrupt)
        self.adverts: dict[int, m.AdvertiseKeys] = {}
        self.shares_out: dict[int, m.ShareKeys] = {}
        self.masked: dict[int, np.ndarray] = {}
        self.acks: dict[int, m.ConsistencyAck] = {}
        self.revealed: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self.refused: dict[int, str] = {}
        self.known_keys: dict[int, KeyPair] = {}  # private mask keys the adversary holds
        self.held_by_corrupt: dict[int, dict[int, tuple[bytes, bytes]]] = {}
        self.relayed: dict[int, set[int]] = {}

    # ---- driving honest machines -------------------------------------------------------
    def _ask(self, u: int, data: bytes) -> bytes | None:
        c = self.clients[u]
        try:
            c.receive(SERVER, data)
        except VeilError as exc:
            self.refused.setdefault(u, type(exc).__name__)  # the first refusal
            return None
        out = c.outbox()
        return out[0][1] if out else None

    def advertise(self) -> None:
        for u, c in self.clients.items():
            c.start()
            self.adverts[u] = m.decode(c.outbox()[0][1], self.cfg)

    def broadcast(self, keys_for: dict[int, m.KeyBroadcast]) -> None:
        for u, msg in keys_for.items():
            out = self._ask(u, msg.to_bytes())
            if out is not None:
                self.shares_out[u] = m.decode(out, self.cfg)

    def honest_broadcast(self, graph: dict[int, frozenset[int]], digests=()) -> dict:
        out = {}
        for u in self.clients:
            ids = sorted(graph[u] | {u})
            keys = tuple((v, self.adverts[v].enc_pk, self.adverts[v].mask_pk,
                          self.adverts[v].commit, self.adverts[v].sig) for v in ids)
            out[u] = m.KeyBroadcast(self.cfg.round, SERVER_ID, keys, tuple(digests))
        return out

    def relay(self, forged: dict[int, list[tuple[int, bytes]]] | None = None,
              only: dict[int, set[int]] | None = None) -> None:
        """Relay the ciphertexts (``forged`` replaces a site's relay; ``only`` restricts
        whose ciphertexts a site is shown)."""
        inbox: dict[int, list[tuple[int, bytes]]] = {}
        for u, msg in self.shares_out.items():
            for v, ct in msg.cts:
                if only is None or v not in only or u in only[v]:
                    inbox.setdefault(v, []).append((u, ct))
        inbox.update(forged or {})
        for v, cts in inbox.items():
            self.relayed[v] = {u for u, _ in cts}
            out = self._ask(v, m.ShareRelay(self.cfg.round, SERVER_ID, tuple(sorted(cts)))
                            .to_bytes())
            if out is not None:
                msg = m.decode(out, self.cfg)
                self.masked[v] = ring.unpack(msg.payload, self.cfg.dim, self.cfg.bits, np.uint32)

    def survivor_lists(self, view_of: dict[int, tuple[int, ...]]) -> None:
        for u, lst in view_of.items():
            out = self._ask(u, m.SurvivorList(self.cfg.round, SERVER_ID, lst).to_bytes())
            if out is not None:
                self.acks[u] = m.decode(out, self.cfg)

    def request(self, u: int, seed_of, key_of, tags) -> None:
        req = m.UnmaskRequest(self.cfg.round, SERVER_ID, tuple(sorted(seed_of)),
                              tuple(sorted(key_of)), tuple(sorted(tags)))
        out = self._ask(u, req.to_bytes())
        if out is not None:
            for peer, kind, y in m.decode(out, self.cfg).shares:
                self.revealed.setdefault((peer, kind), []).append((u + 1, shamir.decode_y(y)))

    def signatures_on(self, lst: tuple[int, ...]) -> dict[int, bytes]:
        """Signatures the adversary holds on ``lst``: honest acks over it, and any list
        signed by a corrupt site (it signs whatever the adversary wants)."""
        from veil.protocols.secagg import signing as sg

        out = {u: a.tags[0][1] for u, a in self.acks.items()
               if tuple(sorted(self.clients[u]._survivors)) == tuple(lst)}
        for u in self.corrupt:
            out[u] = self.clients[u]._identity.sign(
                sg.survivors_statement(self.cfg.session, self.cfg.round, lst))
        return out

    # ---- the attempt -------------------------------------------------------------------
    def _pool(self, peer: int, kind: int) -> list[tuple[int, int]]:
        """Shares of (peer, kind): revealed by honest sites plus held by corrupt ones."""
        pool = dict(self.revealed.get((peer, kind), []))
        for w in self.corrupt:
            held = self.held_by_corrupt.get(w, {}).get(peer)
            if held is not None:
                pool[w + 1] = shamir.decode_y(held[kind])
        return sorted(pool.items())

    def snapshot_corrupt(self) -> None:
        """Corrupt sites keep a copy of every share they hold (call after ``relay``)."""
        for w in self.corrupt:
            self.held_by_corrupt[w] = dict(self.clients[w]._held)

    def _secret(self, peer: int, kind: int) -> bytes | None:
        pool = self._pool(peer, kind)
        if len(pool) < self.cfg.threshold:
            return None
        return shamir.combine(pool, self.cfg.threshold)

    def reconstruct(self, target: int) -> np.ndarray | None:
        """The target's input, if the adversary can remove both its masks; else None.

        y = x + PRG(b) + Σ_v ±PRG(s_tv) over the neighbours v the target masked with (those
        whose shares it was relayed); each s_tv comes from the target's mask key, or from
        the private key behind the public key the target used for v (rebuilt from shares,
        or the adversary's own when it substituted keys).
        """
        cfg, tc = self.cfg, self.clients[target]
        if target not in self.masked:
            return None
        b = self._secret(target, m.SELF_SEED)
        if b is None:
            return None
        s_t = self._secret(target, m.MASK_KEY)
        t_key = KeyPair.from_private_bytes(s_t) if s_t is not None else None
        my_pub = self.adverts[target].mask_pk
        seeds: list[tuple[bytes, int]] = [(b, -1)]
        for v in sorted(self.relayed.get(target, set()) - set(tc._bad)):
            sign = -1 if target < v else 1
            v_pub = tc._peer_keys[v][1]
            if t_key is not None:
                seeds.append((mask_seed(t_key, v_pub, cfg.round), sign))
                continue
            v_key = self.known_keys.get(v)
            if v_key is None or v_key.public != v_pub:
                s_v = self._secret(v, m.MASK_KEY)
                v_key = KeyPair.from_private_bytes(s_v) if s_v is not None else None
            if v_key is None or v_key.public != v_pub:
                return None
            seeds.append((mask_seed(v_key, my_pub, cfg.round), sign))
        y = self.masked[target].copy()
        add_masks(y, seeds)
        return y.astype(np.uint64) & ring.ring_mask(cfg.bits)


def replace_keys(msg: m.KeyBroadcast, swap: dict[int, tuple[bytes, bytes]]) -> m.KeyBroadcast:
    """The same broadcast with some sites' (enc, mask) public keys swapped."""
    keys = tuple((i, *swap.get(i, (c, s)), cm, sg) for i, c, s, cm, sg in msg.keys)
    return dataclasses.replace(msg, keys=keys)
