"""SecAgg+ end to end: exact sums under dropout schedules, aborts, PRG masks, no secret leaks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secagg_harness import inputs_for, plain_sum, reply, run_until

from veil.aggregation.secagg import run_round
from veil.crypto.prg import prg_uint64
from veil.errors import AbortError
from veil.protocols.secagg import STAGES, SecAggConfig, choose_k
from veil.protocols.secagg import messages as m
from veil.protocols.secagg.client import mask_seed


def cfg_for(n: int, k: int, bits: int = 32, d: int = 16, t: int | None = None, rnd: int = 0):
    k = min(k, n - 1)
    return SecAggConfig(rnd, tuple(range(n)), d, bits, k, t or k // 2 + 1, bytes(range(32)))


@pytest.mark.parametrize("n,k", [(7, 4), (7, 6), (12, 4), (12, 11)])
@pytest.mark.parametrize("stage", STAGES)
def test_dropouts_at_every_stage_sum_exact(n: int, k: int, stage: str) -> None:
    cfg = cfg_for(n, k, bits=20)
    x = inputs_for(cfg, n + k)
    out, trace = run_round(cfg, x.__getitem__, {1: stage})
    expected_survivors = [u for u in cfg.site_ids if u != 1 or stage in STAGES[3:]]
    assert list(out.survivors) == expected_survivors
    assert np.array_equal(out.total, plain_sum(cfg, x, out.survivors))
    assert trace.dropped == {1: stage}


schedules = st.integers(6, 12).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.sampled_from([4, 6, n - 1]),  # SecAgg+ (k < n − 1) and classic (k = n − 1)
        st.sampled_from([8, 20, 32, 64]),
        st.dictionaries(st.integers(0, n - 1), st.sampled_from(STAGES), max_size=n // 3),
    )
)


@settings(max_examples=120, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(schedules)
def test_random_dropout_schedules_exact_or_clean_abort(case) -> None:
    n, k, bits, dropouts = case
    cfg = cfg_for(n, k, bits=bits, d=5)
    x = inputs_for(cfg, len(dropouts))
    try:
        out, _ = run_round(cfg, x.__getitem__, dropouts)
    except AbortError as exc:
        assert "stage" in str(exc) and ("threshold" in str(exc) or "shares" in str(exc))
        return
    sent_input = {u for u in cfg.site_ids if dropouts.get(u) not in STAGES[:3]}
    assert set(out.survivors) <= sent_input
    assert len(out.survivors) >= cfg.threshold
    assert np.array_equal(out.total, plain_sum(cfg, x, out.survivors))


@pytest.mark.parametrize("stage,drop", [("advertise", 4), ("masked", 4), ("unmask", 4)])
def test_below_threshold_aborts_without_result(stage: str, drop: int) -> None:
    cfg = cfg_for(6, 5)  # t = 3
    x = inputs_for(cfg)
    with pytest.raises(AbortError) as err:
        run_round(cfg, x.__getitem__, {u: stage for u in range(drop)})
    msg = str(err.value)
    assert f"stage {stage}" in msg and "threshold 3" in msg or "fewer than 3 shares" in msg
    server, clients, inbox = run_until(cfg, x, "unmask")
    for u in range(drop, 6):  # only 2 of 6 answer the unmask request
        server.receive(str(u), reply(clients[u], inbox[u]))
    with pytest.raises(AbortError, match="stage unmask"):
        server.on_deadline()
    assert server.result is None and server.state.value == "ERROR"


def test_masks_are_aes_ctr_prg_expansions() -> None:
    cfg = cfg_for(4, 3, bits=64, d=32)
    zero = {u: np.zeros(cfg.dim, dtype=np.uint64) for u in cfg.site_ids}
    server, clients, inbox = run_until(cfg, zero, "masked")
    c0 = clients[0]
    y = m.decode(reply(c0, inbox[0]), cfg)
    expected = prg_uint64(c0._seed, cfg.dim).copy()
    for v in (1, 2, 3):
        expected += prg_uint64(mask_seed(c0._mask, c0._peer_keys[v][1], cfg.round), cfg.dim)
    assert np.array_equal(np.frombuffer(y.payload, "<u8"), expected)


def test_secrets_never_in_repr_or_errors() -> None:
    cfg = cfg_for(5, 4, d=8)
    x = inputs_for(cfg)
    server, clients, inbox = run_until(cfg, x, "unmask")
    c = clients[0]
    secret_hex = [
        c._seed.hex()[:16], c._mask.private_bytes().hex()[:16], c._enc.private_bytes().hex()[:16]
    ]
    resp = m.decode(reply(c, inbox[0]), cfg)
    texts = [repr(c), str(c), repr(server), repr(resp), str(resp), repr(cfg), repr(c._mask)]
    for share in resp.shares:
        secret_hex.append(share[2].hex()[:16])
    try:
        reply(c, inbox[0])
    except Exception as exc:  # ProtocolError: DONE state takes no more messages
        texts.append(str(exc))
    blob = " ".join(texts)
    assert all(h not in blob for h in secret_hex)
    assert "bytes(" not in repr(resp) and "\\x" not in repr(resp)


def test_choose_k_is_logarithmic_and_complete_for_small_n() -> None:
    small = choose_k(10, 0.1, 0.05)
    assert small.complete and small.k == 9
    ks = [choose_k(n, 0.1, 0.05).k for n in (100, 1000, 10000)]
    assert ks[0] < 100 and ks[2] < 2 * ks[0]  # grows like log n
    for n in (200, 1000):
        gp = choose_k(n, 0.1, 0.05)
        assert gp.guaranteed and gp.k // 2 < gp.t <= gp.k


@pytest.mark.parametrize("n,k", [(10, 4), (31, 8), (7, 6), (7, 100)])
def test_graph_is_symmetric_regular_and_seeded(n: int, k: int) -> None:
    cfg = cfg_for(n, k)
    g = cfg.graph()
    assert all(len(g[u]) == min(k, n - 1) and u not in g[u] for u in g)
    assert all(u in g[v] for u in g for v in g[u])
    assert all(cfg.neighbours_of(u) == g[u] for u in g)
    other = SecAggConfig(0, cfg.site_ids, cfg.dim, cfg.bits, cfg.k, cfg.threshold, b"\x07" * 32)
    assert k >= n - 1 or other.graph() != g


def test_masks_for_narrow_rings_are_aes_ctr_32_bit_words() -> None:
    from veil.crypto.prg import prg_uint32

    cfg = cfg_for(4, 3, bits=32, d=33)
    zero = {u: np.zeros(cfg.dim, dtype=np.uint64) for u in cfg.site_ids}
    server, clients, inbox = run_until(cfg, zero, "masked")
    c0 = clients[0]
    y = m.decode(reply(c0, inbox[0]), cfg)
    expected = prg_uint32(c0._seed, cfg.dim).copy()
    for v in (1, 2, 3):
        expected += prg_uint32(mask_seed(c0._mask, c0._peer_keys[v][1], cfg.round), cfg.dim)
    assert np.array_equal(np.frombuffer(y.payload, "<u4"), expected)


@pytest.mark.parametrize("bits", [1, 12, 31, 32, 33, 64])
def test_exact_sum_across_word_sizes_with_dropouts(bits: int) -> None:
    cfg = cfg_for(8, 7, bits=bits, d=21)
    x = inputs_for(cfg, seed=bits)
    drops = {1: "masked", 5: "consistency", 6: "share"}
    out, _ = run_round(cfg, x.__getitem__, drops)
    assert out.total.dtype == np.uint64
    assert np.array_equal(out.total, plain_sum(cfg, x, out.survivors))
