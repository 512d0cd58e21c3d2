"""`veil bench secagg`: cost of one SecAgg+ round (per site, server, bytes) and its ratios.

For each (n, d, dropout) cell the round runs in process with the real state machines
(:func:`veil.aggregation.secagg.run_round`), b = 32 bits, k and t from
:func:`~veil.protocols.secagg.choose_k` (dropout, 5 % corrupt). Dropped sites are spread
uniformly over the five stages. Reported (medians over the sites that finished):

* ``site_s`` — a site's total time in its state machine; ``site_mask_s`` — its step 3
  (open shares, pairwise key agreements, PRG expansion, masking, packing);
* ``server_s`` — the server's total time; ``server_unmask_s`` — its step 5;
* ``bytes_per_site`` — bytes a site sent;
* ``ratio_mask_kernel_vs_aes_paired`` — the masking kernel (PRG + add + pack) against
  bare keystreams for the same (k+1)·d words, timed back to back, median of 5 pairs
  (the most noise-robust ratio on a shared machine);
* ratios measured side by side: ``site_mask_s`` / raw AES-CTR keystream for the same
  (k+1)·d words (as k+1 keystreams of d words, one per seed, as the protocol does),
  ``server_unmask_s`` / raw keystream for the words the server expanded,
  and bytes per site / the b-bit plaintext (d·b/8).

Cells whose key-agreement and Shamir work (n·k) would exceed the machine budget are
listed as skipped with their k, never extrapolated. Timings are medians of the sites of
one round (the raw keystream: fastest of 5 repeats, so ratios err high); on a shared
machine they are noisy.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np

from veil.aggregation.secagg import run_round
from veil.crypto.ring import PrgBuffer, pack, packed_size
from veil.protocols.secagg import STAGES, SecAggConfig, choose_k
from veil.protocols.secagg.client import add_masks

__all__ = ["run"]

BITS = 32
CORRUPT = 0.05


def _raw_keystream_s(words: int, d: int, repeats: int = 5) -> float:
    """Fastest of ``repeats`` timings (after a warm-up) of ``words`` AES-CTR words made as
    ``words/d`` keystreams of d words, the protocol's granularity (one per seed). The
    minimum makes the reference fast and the reported ratios conservative."""
    key = b"\x01" * 32
    buf = PrgBuffer(d)  # keystream into a preallocated buffer: nothing but AES-CTR
    buf.fill(key)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(max(1, words // d)):
            buf.fill(key)
        times.append(time.perf_counter() - t0)
    return min(times)


def _paired_mask_ratio(seeds: int, d: int, repeats: int = 5) -> float:
    """Median over repeats of (mask + pack time) / (raw keystream time), measured back to
    back: the masking kernel of step 3 (``add_masks`` over ``seeds`` keystreams of d words
    and b-bit packing) against the same number of bare AES-CTR keystreams."""
    keys = [(os.urandom(32), 1 if i % 2 else -1) for i in range(seeds)]
    x = np.arange(d, dtype=np.uint64)
    buf = PrgBuffer(d)
    ratios = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for key, _ in keys:
            buf.fill(key)
        raw = time.perf_counter() - t0
        t0 = time.perf_counter()
        y = x.copy()
        add_masks(y, keys)
        pack(y, BITS)
        ratios.append((time.perf_counter() - t0) / raw)
    return statistics.median(ratios)


def _cell(n: int, d: int, dropout: float, max_nk: int) -> dict[str, Any]:
    gp = choose_k(n, dropout, CORRUPT)
    row: dict[str, Any] = {"n": n, "d": d, "dropout": dropout, "k": gp.k, "t": gp.t}
    plain = packed_size(d, BITS)
    if n * gp.k > max_nk:
        row["skipped"] = f"n·k = {n * gp.k} above the budget {max_nk} for this machine"
        return row
    cfg = SecAggConfig(0, tuple(range(n)), d, BITS, gp.k, gp.t, bytes(32))
    gen = np.random.default_rng(n * 1000 + int(dropout * 100))  # schedule only, not crypto
    dropped = gen.choice(n, size=int(round(dropout * n)), replace=False)
    dropouts = {int(u): STAGES[int(gen.integers(len(STAGES)))] for u in dropped}
    base = np.arange(d, dtype=np.uint64)

    t0 = time.perf_counter()
    out, trace = run_round(cfg, lambda u: base * np.uint64(u + 1), dropouts)
    wall = time.perf_counter() - t0
    expect = (base * np.uint64(sum(u + 1 for u in out.survivors))) & np.uint64(2**BITS - 1)
    done = [u for u in out.survivors if u not in trace.dropped]
    site_total = [sum(trace.site_time_s[u].values()) for u in done]
    site_mask = [trace.site_time_s[u]["masked"] for u in done]
    words = int(statistics.median(trace.words_expanded[u] for u in done))
    raw_site = _raw_keystream_s(words, d)
    raw_server = _raw_keystream_s(out.words_expanded, d) if out.words_expanded else 0.0
    sent = statistics.median(trace.bytes_sent[u] for u in done)
    row.update(
        correct=bool(np.array_equal(out.total, expect)),
        survivors=len(out.survivors),
        wall_s=wall,
        site_s=statistics.median(site_total),
        site_mask_s=statistics.median(site_mask),
        server_s=sum(trace.server_time_s.values()),
        server_unmask_s=trace.server_time_s["unmask"],
        bytes_per_site=int(sent),
        bytes_received_per_site=int(statistics.median(trace.bytes_received[u] for u in done)),
        site_words=words,
        server_words=out.words_expanded,
        raw_aes_site_s=raw_site,
        raw_aes_server_s=raw_server,
        ratio_site_mask_vs_aes=statistics.median(site_mask) / raw_site,
        ratio_mask_kernel_vs_aes_paired=_paired_mask_ratio(max(1, words // d), d),
        ratio_server_unmask_vs_aes=(
            trace.server_time_s["unmask"] / raw_server if raw_server else float("nan")
        ),
        ratio_bytes_vs_plaintext=sent / plain,
    )
    return row


def run(quick: bool = False) -> dict[str, Any]:
    """Run the SecAgg+ benchmark grid.

    Args:
        quick: small grid (< 60 s on 2 cores) instead of the issue's full grid.

    Returns:
        ``{"benchmark", "params", "rows", "machine", ...}`` with one row per cell.
    """
    from veil.bench._machine import machine_info

    if quick:
        grid = [(n, d) for n in (10, 100) for d in (10_000, 100_000)]
        drops: tuple[float, ...] = (0.0, 0.1)
        max_nk = 6_000
    else:
        grid = [(n, d) for n in (10, 100, 1000) for d in (10_000, 100_000)] + [(100, 1_000_000)]
        drops, max_nk = (0.0, 0.1, 0.3), 100_000
    t0 = time.perf_counter()
    rows = [_cell(n, d, p, max_nk) for n, d in grid for p in drops]
    return {
        "benchmark": "secagg",
        "quick": quick,
        "params": {"bits": BITS, "corrupt": CORRUPT, "dropout_stages": list(STAGES)},
        "rows": rows,
        "targets": {"ratio_site_mask_vs_aes": 2.0, "ratio_server_unmask_vs_aes": 2.0,
                    "ratio_bytes_vs_plaintext_at_1M": 1.05},
        "total_s": time.perf_counter() - t0,
        "command": f"veil bench secagg{' --quick' if quick else ''}",
        "machine": machine_info(),
    }
