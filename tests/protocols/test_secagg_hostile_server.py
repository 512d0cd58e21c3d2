"""A hostile server (tests/protocols/hostile.py, not the normal driver) attacks one target
site of a malicious-server-mode round; every attack must leave it unable to rebuild the
target's input. Where the attack works against the semi-honest mode, that mode is run too,
as the control that shows the adversary is real."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hostile import HostileServer, replace_keys

from veil.crypto import aead
from veil.crypto.identity import Roster, SiteIdentity
from veil.crypto.ka import KeyPair
from veil.protocols.secagg import SecAggClient, SecAggConfig
from veil.protocols.secagg import messages as m
from veil.protocols.secagg import signing as sg
from veil.protocols.secagg.client import _channel_keys

D, TARGET = 8, 0
SESSION = b"hostile-test-session-0123456789a"


def setup(n, k, t, malicious=True, rnd=1, ids=None, x=None):
    ids = ids or {u: SiteIdentity.generate(u) for u in range(n)}
    roster = Roster.of("f", ids.values()) if malicious else None
    cfg = SecAggConfig(rnd, tuple(range(n)), D, 32, k, t, b"\x07" * 32, roster, SESSION)
    gen = np.random.default_rng(n * 100 + k)
    x = x or {u: gen.integers(0, 2**20, D, dtype=np.uint64) for u in range(n)}
    clients = {u: SecAggClient(cfg, u, x[u], ids[u] if malicious else None) for u in range(n)}
    return cfg, ids, x, clients


def honest_keys(adv: HostileServer):
    """Stage 1 as an honest server would run it (joint graph seed in malicious mode)."""
    cfg = adv.cfg
    adv.advertise()
    digests = ()
    graph = cfg.graph()
    if cfg.malicious:
        digests = tuple(sorted(
            (u, sg.advert_digest(sg.advert_statement(cfg.session, cfg.round, u, a.enc_pk,
                                                     a.mask_pk, a.commit), a.sig))
            for u, a in adv.adverts.items()))
        graph = cfg.graph(cfg.joint_graph_seed(digests))
    return adv.honest_broadcast(graph, digests), graph


def steal_shares(adv: HostileServer, target: int, enc_keys: dict[int, KeyPair]) -> None:
    """Open the target's share ciphertexts addressed to keys the adversary holds."""
    cfg = adv.cfg
    for v, ct in adv.shares_out.get(target, m.ShareKeys(cfg.round, target, ())).cts:
        if v not in enc_keys:
            continue
        key = _channel_keys(enc_keys[v], adv.adverts[target].enc_pk, cfg.round)[0]
        plain = aead.open_sealed(key, ct, aead.bind("veil/secagg/v1/share", cfg.round, target, v))
        for kind, y in ((m.SELF_SEED, plain[8:41]), (m.MASK_KEY, plain[41:])):
            adv.revealed.setdefault((target, kind), []).append((v + 1, int.from_bytes(y, "little")))


def forged_relay(adv, target: int, enc_keys: dict[int, KeyPair]) -> dict:
    """Ciphertexts 'from' the target's neighbours under keys the adversary holds."""
    cfg, out = adv.cfg, []
    for v in sorted(enc_keys):
        key = _channel_keys(enc_keys[v], adv.adverts[target].enc_pk, cfg.round)[0]
        plain = v.to_bytes(4, "little") + target.to_bytes(4, "little") + bytes(66)
        out.append((v, aead.seal(key, plain, aead.bind("veil/secagg/v1/share", cfg.round,
                                                       v, target))))
    return {target: out}


def substituted(adv, bcast, graph, target, fakes):
    """The target's broadcast with its neighbours' keys replaced by the adversary's."""
    swap = {v: (fakes[v][0].public, fakes[v][1].public) for v in graph[target]}
    for v in graph[target]:
        adv.known_keys[v] = fakes[v][1]
    return {**bcast, target: replace_keys(bcast[target], swap)}


@pytest.mark.parametrize("malicious", [False, True], ids=["semi-honest-control", "malicious"])
def test_key_substitution(malicious: bool) -> None:
    cfg, ids, x, clients = setup(8, 7, 5 if malicious else 4, malicious)
    adv = HostileServer(cfg, clients)
    bcast, graph = honest_keys(adv)
    fakes = {v: (KeyPair.generate(), KeyPair.generate()) for v in graph[TARGET]}
    adv.broadcast(substituted(adv, bcast, graph, TARGET, fakes))
    steal_shares(adv, TARGET, {v: f[0] for v, f in fakes.items()})
    adv.relay(forged_relay(adv, TARGET, {v: f[0] for v, f in fakes.items()}))
    got = adv.reconstruct(TARGET)
    if not malicious:  # the control: without signed keys the server reads the target
        assert got is not None and np.array_equal(got, x[TARGET])
        return
    assert adv.refused[TARGET] == "IntegrityError"
    assert got is None


def split_view_attack(n: int, k: int, t: int, ids, x):
    """The issue's attack: the target masks with only t partners P (the server relays it
    just their shares); P are told everyone survived and asked for self-mask seeds (the
    target's among them); the others, the target included, are told P dropped and asked
    for P's mask keys. Each site is shown the signatures the adversary has on its list."""
    cfg, _, _, clients = setup(n, k, t, ids=ids, x=x, malicious=True)
    adv = HostileServer(cfg, clients)
    bcast, graph = honest_keys(adv)
    adv.broadcast(bcast)
    partners = set(sorted(graph[TARGET])[:t])
    adv.relay(only={TARGET: partners})
    everyone = tuple(sorted(adv.masked))
    without = tuple(v for v in everyone if v not in partners)
    lists = {u: everyone if u in partners else without for u in everyone}
    ask_by_lists(adv, lists, graph, everyone)
    return adv


def ask_by_lists(adv, lists, graph, sites) -> None:
    """Show each site its list, then ask it for exactly what its own list justifies,
    forwarding every signature the adversary holds on that list from its neighbours."""
    adv.survivor_lists(lists)
    for u in sites:
        mine, held = set(lists[u]), set(adv.clients[u]._held)
        sigs = adv.signatures_on(lists[u])
        adv.request(u, held & mine, held - mine,
                    [(v, s) for v, s in sigs.items() if v != u and v in graph[u] and v in mine])


def test_split_views_control_without_the_signed_list_rule(monkeypatch) -> None:
    """Control: with the "t neighbours signed my list" rule switched off, the attack
    unmasks the target — so the rule is what refuses it below."""
    monkeypatch.setattr(SecAggClient, "_check_signed_lists", lambda self, msg: None)
    ids = {u: SiteIdentity.generate(u) for u in range(10)}
    cfg, _, x, _ = setup(10, 9, 5, ids=ids)
    adv = split_view_attack(10, 9, 5, ids, x)
    assert np.array_equal(adv.reconstruct(TARGET), x[TARGET])


@pytest.mark.parametrize("n,k,t", [(10, 9, 5), (30, 12, 9)], ids=["classic", "secagg+"])
def test_split_views_reveal_nothing(n: int, k: int, t: int) -> None:
    ids = {u: SiteIdentity.generate(u) for u in range(n)}
    cfg, _, x, _ = setup(n, k, t, ids=ids)
    adv = split_view_attack(n, k, t, ids, x)
    assert adv.reconstruct(TARGET) is None
    assert "ProtocolError" in adv.refused.values()  # "only m neighbours signed this list"
    # random partitions of the same kind (the target told it survived, or not)
    gen = np.random.default_rng(5)
    for trial in range(4):
        cfg, _, _, clients = setup(n, k, t, ids=ids, x=x)
        adv = HostileServer(cfg, clients)
        bcast, graph = honest_keys(adv)
        adv.broadcast(bcast)
        adv.relay()
        everyone = tuple(sorted(adv.masked))
        others = [u for u in everyone if u != TARGET]
        gen.shuffle(others)
        group_a = {TARGET, *others[: len(others) // 2 + trial - 2]}
        lists = {u: everyone if u in group_a else tuple(v for v in everyone if v != TARGET)
                 for u in everyone}
        ask_by_lists(adv, lists, graph, [u for u in everyone if u != TARGET])
        assert adv.reconstruct(TARGET) is None, f"split {sorted(group_a)} unmasked the target"


def test_signatures_on_another_list_are_refused() -> None:
    cfg, ids, x, clients = setup(10, 9, 5)
    adv = HostileServer(cfg, clients)
    bcast, graph = honest_keys(adv)
    adv.broadcast(bcast)
    adv.relay()
    everyone = tuple(sorted(adv.masked))
    without = tuple(v for v in everyone if v != TARGET)
    adv.survivor_lists({u: everyone if u < 5 else without for u in everyone})
    # site 7 (told the target dropped) is shown the signatures of the sites told otherwise
    sigs = {u: a.tags[0][1] for u, a in adv.acks.items()}
    held = set(adv.clients[7]._held)
    adv.request(7, held & set(without), {TARGET}, [(v, sigs[v]) for v in without if v != 7])
    assert adv.refused[7] == "ProtocolError"  # "only 0 neighbours signed this site's list"
    assert (TARGET, m.MASK_KEY) not in adv.revealed


def test_both_secrets_across_two_requests() -> None:
    cfg, ids, x, clients = setup(10, 9, 5)
    adv = HostileServer(cfg, clients)
    bcast, graph = honest_keys(adv)
    adv.broadcast(bcast)
    adv.relay()
    everyone = tuple(sorted(adv.masked))
    adv.survivor_lists({u: everyone for u in everyone})
    sigs = adv.signatures_on(everyone)
    for u in everyone:
        if u == TARGET:
            continue
        tags = [(v, s) for v, s in sigs.items() if v != u]
        held = set(adv.clients[u]._held)
        adv.request(u, held, set(), tags)  # honest request: self-mask seeds
        adv.request(u, set(), {TARGET}, tags)  # second request: the target's mask key
    assert (TARGET, m.SELF_SEED) in adv.revealed and (TARGET, m.MASK_KEY) not in adv.revealed
    assert adv.reconstruct(TARGET) is None


@pytest.mark.parametrize("malicious", [False, True], ids=["semi-honest-control", "malicious"])
def test_predictable_graph(malicious: bool) -> None:
    n, k, t = 40, 10, 8
    cfg, ids, x, clients = setup(n, k, t, malicious)
    known_before = cfg.graph()  # what a public graph seed lets anyone compute in advance
    corrupt = set(sorted(known_before[TARGET])[:t])
    adv = HostileServer(cfg, clients, corrupt)
    bcast, graph = honest_keys(adv)
    adv.broadcast(bcast)
    adv.relay()
    adv.snapshot_corrupt()
    got = adv.reconstruct(TARGET)
    if not malicious:
        assert got is not None and np.array_equal(got, x[TARGET])
        return
    assert len(corrupt & graph[TARGET]) < t
    assert got is None


def test_corrupt_neighbours_at_the_bound_with_split_views() -> None:
    n, k, t = 12, 11, 8  # t > (k + c)/2 holds for c = 4 corrupt neighbours
    corrupt = {8, 9, 10, 11}
    assert (k + len(corrupt)) / 2 < t
    ids = {u: SiteIdentity.generate(u) for u in range(n)}
    honest = [u for u in range(1, n) if u not in corrupt]
    for size in range(0, len(honest) + 1):
        for group in itertools.islice(itertools.combinations(honest, size), 3):
            cfg, _, x, clients = setup(n, k, t, ids=ids)
            adv = HostileServer(cfg, clients, corrupt)
            bcast, graph = honest_keys(adv)
            adv.broadcast(bcast)
            adv.relay()
            adv.snapshot_corrupt()
            for w in corrupt:
                adv.known_keys[w] = clients[w]._mask
            everyone = tuple(sorted(adv.masked))
            alive_a = set(group) | {TARGET}
            lists = {u: everyone if u in alive_a else tuple(v for v in everyone if v != TARGET)
                     for u in everyone if u not in corrupt}
            ask_by_lists(adv, lists, graph, honest)
            assert adv.reconstruct(TARGET) is None, f"group {group} unmasked the target"


def test_sybil_keys_not_in_the_roster() -> None:
    cfg, ids, x, clients = setup(8, 7, 5)
    adv = HostileServer(cfg, clients)
    bcast, graph = honest_keys(adv)
    sybils = {v: SiteIdentity.generate(v) for v in graph[TARGET]}  # not enrolled
    keys = []
    for v, c, s, cm, sig in bcast[TARGET].keys:
        if v in sybils:
            fake_enc, fake_mask = KeyPair.generate(), KeyPair.generate()
            adv.known_keys[v] = fake_mask
            stmt = sg.advert_statement(cfg.session, cfg.round, v, fake_enc.public,
                                       fake_mask.public, cm)
            keys.append((v, fake_enc.public, fake_mask.public, cm, sybils[v].sign(stmt)))
        else:
            keys.append((v, c, s, cm, sig))
    adv.broadcast({**bcast, TARGET: m.KeyBroadcast(cfg.round, bcast[TARGET].sender,
                                                   tuple(keys), bcast[TARGET].digests)})
    adv.relay()
    assert adv.refused[TARGET] == "IntegrityError"
    assert adv.reconstruct(TARGET) is None


@pytest.mark.parametrize("malicious", [False, True], ids=["semi-honest-control", "malicious"])
def test_replayed_advertisements_from_an_earlier_round(malicious: bool) -> None:
    n, k, t = 8, 7, 5 if malicious else 4
    cfg1, ids, x, clients1 = setup(n, k, t, malicious, rnd=1)
    adv1 = HostileServer(cfg1, clients1)
    bcast1, graph1 = honest_keys(adv1)
    old = {v: a for v, a in adv1.adverts.items()}
    # worst case: every secret of round 1 leaked to the adversary afterwards
    leaked = {v: (clients1[v]._enc, clients1[v]._mask) for v in range(n)}
    cfg2, _, _, clients2 = setup(n, k, t, malicious, rnd=2, ids=ids, x=x)
    adv = HostileServer(cfg2, clients2)
    bcast, graph = honest_keys(adv)
    keys = tuple((v, old[v].enc_pk, old[v].mask_pk, old[v].commit, old[v].sig)
                 if v != TARGET else e for v, *_ in bcast[TARGET].keys
                 for e in [next(z for z in bcast[TARGET].keys if z[0] == v)])
    for v in graph[TARGET]:
        adv.known_keys[v] = leaked[v][1]
    adv.broadcast({**bcast, TARGET: m.KeyBroadcast(cfg2.round, bcast[TARGET].sender, keys,
                                                   bcast[TARGET].digests)})
    steal_shares(adv, TARGET, {v: leaked[v][0] for v in graph[TARGET]})
    adv.relay(forged_relay(adv, TARGET, {v: leaked[v][0] for v in graph[TARGET]}))
    got = adv.reconstruct(TARGET)
    if not malicious:
        assert got is not None and np.array_equal(got, x[TARGET])
        return
    assert adv.refused[TARGET] == "IntegrityError"
    assert got is None
