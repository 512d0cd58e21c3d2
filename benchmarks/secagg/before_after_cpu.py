"""Before/after in one run: SecAgg+ at n = 100, d = 26,122, 10 sites dropped over the five
stages — semi-honest, malicious-server mode at the same (k, t), and at its own (k, t) — in
child processes alternating between two source trees (process CPU time per round, modelled
critical path, server unmask time; medians).

Usage: `.venv/bin/python benchmarks/secagg/before_after_cpu.py BEFORE_SRC AFTER_SRC ROUNDS PAIRS`
(e.g. BEFORE_SRC from `git archive <commit> src | tar -x -C /tmp/before`, then
/tmp/before/src and src). Prints JSON.
"""
import json, os, statistics, subprocess, sys

CHILD = r'''
import json, sys, time, numpy as np
from veil.aggregation.secagg import run_round
from veil.crypto.identity import Roster, SiteIdentity
from veil.protocols.secagg import SecAggConfig, choose_k, STAGES
n, d = 100, 26_122
ids = {u: SiteIdentity.generate(u) for u in range(n)}
roster = Roster.of("b", ids.values())
rows = np.random.default_rng(0).integers(0, 2**32, (n, d), dtype=np.uint64)
drops = {u: STAGES[i % 5] for i, u in enumerate(range(0, n, 10))}
semi = choose_k(n, 0.1, 0.05); mal = choose_k(n, 0.1, 0.05, model="malicious")
cells = {"semi": (SecAggConfig(1, tuple(range(n)), d, 32, semi.k, semi.t, bytes(32)), None),
         "mal_same_kt": (SecAggConfig(1, tuple(range(n)), d, 32, semi.k, semi.t, bytes(32), roster, bytes(32)), ids),
         "mal_own": (SecAggConfig(1, tuple(range(n)), d, 32, mal.k, mal.t, bytes(32), roster, bytes(32)), ids)}
out = {}
for rep in range(int(sys.argv[1]) + 1):
    for name, (cfg, idn) in cells.items():
        t0 = time.process_time(); o, tr = run_round(cfg, lambda u: rows[u], drops, identities=idn)
        cpu = time.process_time() - t0
        assert np.array_equal(o.total, rows[list(o.survivors)].sum(axis=0) & np.uint64(2**32 - 1))
        if rep:
            r = out.setdefault(name, {"cpu": [], "crit": [], "server_unmask": [], "k": cfg.k, "t": cfg.threshold})
            r["cpu"].append(cpu); r["crit"].append(tr.critical_path_s()); r["server_unmask"].append(tr.server_time_s["unmask"])
print(json.dumps(out))
'''
trees = dict(before=sys.argv[1], after=sys.argv[2])
reps, pairs = int(sys.argv[3]), int(sys.argv[4])
acc = {k: {} for k in trees}
for p in range(pairs):
    for label, src in trees.items():
        env = dict(os.environ, PYTHONPATH=src)
        res = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(reps)], env=env,
                                        capture_output=True, text=True, check=True).stdout)
        for name, r in res.items():
            a = acc[label].setdefault(name, {"cpu": [], "crit": [], "server_unmask": [], "k": r["k"], "t": r["t"]})
            for key in ("cpu", "crit", "server_unmask"):
                a[key] += r[key]
summary = {}
for label, cells in acc.items():
    for name, r in cells.items():
        summary[f"{label}/{name}"] = {"k": r["k"], "t": r["t"], "cpu_s": statistics.median(r["cpu"]),
            "critical_path_s": statistics.median(r["crit"]), "server_unmask_s": statistics.median(r["server_unmask"]), "rounds": len(r["cpu"])}
    s = acc[label]
    for name in ("mal_same_kt", "mal_own"):
        summary[f"{label}/ratio_cpu_{name}_over_semi"] = statistics.median(s[name]["cpu"]) / statistics.median(s["semi"]["cpu"])
        summary[f"{label}/ratio_crit_{name}_over_semi"] = statistics.median(s[name]["crit"]) / statistics.median(s["semi"]["crit"])
print(json.dumps(summary, indent=1))
