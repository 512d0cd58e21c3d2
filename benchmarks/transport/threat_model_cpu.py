"""CPU time and critical path of SecAgg+ at n = 100: semi-honest vs malicious-server mode.

Run from the repository root: `.venv/bin/python benchmarks/transport/threat_model_cpu.py`.
"""
import time, statistics, numpy as np
from veil.aggregation.secagg import run_round
from veil.crypto.identity import Roster, SiteIdentity
from veil.protocols.secagg import SecAggConfig, choose_k
n, d = 100, 26_122
ids = {u: SiteIdentity.generate(u) for u in range(n)}
roster = Roster.of("b", ids.values())
rows = np.random.default_rng(0).integers(0, 2**32, (n, d), dtype=np.uint64)
stages = ("advertise", "share", "masked", "consistency", "unmask")
drops = {u: stages[i % 5] for i, u in enumerate(range(0, n, 10))}
semi = choose_k(n, 0.1, 0.05); mal = choose_k(n, 0.1, 0.05, model="malicious")
cells = {"semi": (SecAggConfig(1, tuple(range(n)), d, 32, semi.k, semi.t, bytes(32)), None),
         "mal_same_kt": (SecAggConfig(1, tuple(range(n)), d, 32, semi.k, semi.t, bytes(32), roster, bytes(32)), ids),
         "mal_own": (SecAggConfig(1, tuple(range(n)), d, 32, mal.k, mal.t, bytes(32), roster, bytes(32)), ids)}
res = {k: [] for k in cells}; crit = {k: [] for k in cells}
for rep in range(3):
    for name, (cfg, idn) in cells.items():
        t0 = time.process_time(); out, tr = run_round(cfg, lambda u: rows[u], drops, identities=idn)
        res[name].append(time.process_time() - t0); crit[name].append(tr.critical_path_s())
        assert np.array_equal(out.total, rows[list(out.survivors)].sum(axis=0) & np.uint64(2**32-1))
for name in cells:
    print(name, "k,t", cells[name][0].k, cells[name][0].threshold, "cpu median %.3f" % statistics.median(res[name][1:]), "crit(wall) median %.3f" % statistics.median(crit[name][1:]))
print("ratios cpu: same_kt %.2f own %.2f" % (statistics.median(res['mal_same_kt'][1:])/statistics.median(res['semi'][1:]), statistics.median(res['mal_own'][1:])/statistics.median(res['semi'][1:])))
