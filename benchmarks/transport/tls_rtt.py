"""Loopback round trip of veil.transport.tcp (mutual TLS 1.3) between two OS processes.

Run from the repository root: `.venv/bin/python benchmarks/transport/tls_rtt.py`.
"""
import multiprocessing as mp, sys, time, statistics, tempfile, pathlib  # noqa: E401
sys.path.insert(0, "tests/transport")
from tcp_parties import free_ports, make_certs, echo_party
from veil.transport.tcp import connect_mesh
if __name__ == "__main__":
    N = 2000
    d = pathlib.Path(tempfile.mkdtemp())
    make_certs(d, ["a", "b"])
    addrs = {n: ("127.0.0.1", p) for n, p in zip(["a", "b"], free_ports(2))}
    q = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=echo_party, args=("b", addrs, str(d), 10**6, q)); p.start()
    ch = connect_mesh("a", addrs, d/"a.crt", d/"a.key", d/"test-ca.crt")
    for size in (64, 8192, 1 << 20):
        msg = bytes(size)
        reps = N if size < 1 << 20 else 100
        for _ in range(20 if size < 1<<20 else 3): ch.send("b", msg); ch.recv("b", 10)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter(); ch.send("b", msg); ch.recv("b", 10); ts.append(time.perf_counter() - t0)
        print(f"payload {size} B: median RTT {statistics.median(ts)*1e6:.0f} us, p90 {sorted(ts)[int(.9*len(ts))]*1e6:.0f} us over {reps}")
        if size >= 1<<20: break
    ch.close(); p.kill()
