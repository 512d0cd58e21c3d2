"""CPU time of SecAgg+ rounds through run_round, to compare two checkouts in one run.

Old checkout: `git worktree add --detach /tmp/veil_old 74c28c7`, then alternate
`PYTHONPATH=/tmp/veil_old/src .venv/bin/python benchmarks/transport/round_cpu.py old` and
`.venv/bin/python benchmarks/transport/round_cpu.py new`.
"""
import sys, time, statistics, numpy as np
from veil.aggregation.secagg import run_round
from veil.protocols.secagg import SecAggConfig, choose_k
out = []
for n, d, drop in ((10, 100_000, 0.0), (20, 100_000, 0.0), (100, 26_122, 0.1)):
    k = n - 1 if drop == 0 else choose_k(n, drop, 0.05).k
    cfg = SecAggConfig(1, tuple(range(n)), d, 32, k, k // 2 + 1 if drop == 0 else choose_k(n, drop, 0.05).t, bytes(32))
    rows = np.random.default_rng(0).integers(0, 2**32, (n, d), dtype=np.uint64)
    stages = ("advertise", "share", "masked", "consistency", "unmask")
    drops = {u: stages[i % 5] for i, u in enumerate(range(0, n, 10))} if drop else {}
    run_round(cfg, lambda u: rows[u], drops)
    ts = []
    for _ in range(3):
        t0 = time.process_time(); run_round(cfg, lambda u: rows[u], drops); ts.append(time.process_time() - t0)
    out.append(f"n={n} d={d} drop={drop}: cpu {statistics.median(ts):.3f}")
print(sys.argv[1], "; ".join(out), flush=True)
