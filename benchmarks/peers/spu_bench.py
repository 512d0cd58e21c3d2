"""SecretFlow-SPU 0.9.5 on veil's private-inference suite (run with .peers/spu/bin/python).

Three SPU runtime processes (ABY3, FM64, brpc links on loopback) play the compute parties;
this process plays the data and model owner: it compiles each workload (jax) once, secret-
shares the model's parameters once per workload (set-up), then per call shares the input,
runs, and reconstructs the output (one warm-up call first, not counted, as veil's mpc rows
do). Reported per workload (medians): ``latency_s`` (the
slowest party's ``Runtime.run``: online phase), ``setup_s`` (compile + parameter sharing),
``input_s`` (input sharing + hand-over), ``reveal_s`` (output collection + reconstruction),
``max_abs_err`` against the float64 plaintext, and ``bytes`` when SPU's link profile log
reports it.

Usage: python spu_bench.py --spec SPEC.npz --out OUT.json [--repeats 5]
The spec is written by veil.bench._inference_spu.export (layers, weights, inputs).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import socket
import statistics
import sys
import tempfile
import time


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _config():
    import spu.libspu as libspu

    cfg = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.ABY3, field=libspu.FieldType.FM64)
    cfg.enable_pphlo_profile = True  # prints per-run link statistics to the log
    return cfg


def _worker(rank, ports, conn, log_path):
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import spu.api as spu_api
    import spu.libspu as libspu

    desc = libspu.link.Desc()
    desc.recv_timeout_ms = 600_000
    desc.http_max_payload_size = 1 << 30
    for r, p in enumerate(ports):
        desc.add_party(f"id_{r}", f"127.0.0.1:{p}")
    link = libspu.link.create_brpc(desc, rank)
    rt = spu_api.Runtime(link, _config())
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            break
        if msg[0] == "set":
            for name, (meta, chunks) in msg[1].items():
                s = libspu.Share()
                s.meta, s.share_chunks = meta, chunks
                rt.set_var(name, s)
            conn.send("ok")
        elif msg[0] == "run":
            exe = libspu.Executable()
            exe.ParseFromString(msg[1])
            link.barrier()
            t0 = time.perf_counter()
            rt.run(exe)
            dt = time.perf_counter() - t0
            outs = []
            for name in exe.output_names:
                s = rt.get_var(name)
                outs.append((s.meta, list(s.share_chunks)))
            sys.stdout.flush()
            conn.send((dt, outs))
    link.stop_link()


def _forest_fn(depth):
    import jax.numpy as jnp

    n_leaf = 2**depth
    nodes, right = [], []
    for leaf in range(n_leaf):
        pos, ns, rs = 0, [], []
        for d in range(depth):
            bit = (leaf >> (depth - 1 - d)) & 1
            ns.append(pos)
            rs.append(bit)
            pos = 2 * pos + 1 + bit
        nodes.append(ns)
        right.append(rs)
    import numpy as np

    nodes = np.array(nodes).T  # (D, L)
    right = np.array(right).T.astype(bool)

    def fn(x, sel, thr, leaves):
        v = x @ sel  # (N, T*I)
        c = (v > thr).astype(jnp.float32)
        n_trees = leaves.shape[0]
        c = c.reshape(x.shape[0], n_trees, -1)
        f = c[:, :, nodes]  # (N, T, D, L)
        f = jnp.where(right, f, 1.0 - f)
        ind = jnp.prod(f, axis=2)  # (N, T, L)
        return jnp.einsum("ntl,tlo->no", ind, leaves)

    return fn


def _layers_fn(layers):
    import jax
    import jax.numpy as jnp

    def fn(x, *params):
        it = iter(params)
        for layer in layers:
            t = layer["type"]
            if t == "linear":
                w, b = next(it), next(it)
                x = x @ w.T + b
            elif t == "conv":
                w, b = next(it), next(it)
                ph, pw = layer["padding"]
                x = jax.lax.conv_general_dilated(
                    x, w, tuple(layer["stride"]), [(ph, ph), (pw, pw)],
                    dimension_numbers=("NCHW", "OIHW", "NCHW")) + b[None, :, None, None]
            elif t in ("avgpool", "maxpool"):
                (kh, kw), (sh, sw) = layer["kernel"], layer["stride"]
                n, c, h, w_ = x.shape
                oh, ow = (h - kh) // sh + 1, (w_ - kw) // sw + 1
                wins = jnp.stack([x[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
                                  for i in range(kh) for j in range(kw)])
                x = wins.mean(0) if t == "avgpool" else wins.max(0)
            elif t == "flatten":
                x = x.reshape(x.shape[0], -1)
            elif t == "relu":
                x = jax.nn.relu(x)
            elif t == "gelu":
                x = jax.nn.gelu(x, approximate=True)
            elif t == "sigmoid":
                x = jax.nn.sigmoid(x)
            elif t == "tanh":
                x = jnp.tanh(x)
            elif t == "softmax":
                x = jax.nn.softmax(x, axis=-1)
            else:
                raise ValueError(f"unsupported layer {t}")
        return x

    return fn


_BYTES = re.compile(r"Link details: total send bytes (\d+)")


def _log_bytes(path, start):
    with open(path, errors="replace") as f:
        f.seek(start)
        text = f.read()
    vals = [int(v) for v in _BYTES.findall(text)]
    return sum(vals) if vals else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import jax.numpy as jnp
    import numpy as np
    import spu.api as spu_api
    import spu.libspu as libspu
    import spu.utils.frontend as spu_fe

    data = np.load(args.spec, allow_pickle=False)
    spec = json.loads(str(data["__spec__"]))
    ports = _free_ports(3)
    ctx = mp.get_context("spawn")
    logs = [tempfile.mktemp(prefix=f"spu{r}-", suffix=".log") for r in range(3)]
    pipes, procs = [], []
    for r in range(3):
        a, b = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(r, ports, b, logs[r]), daemon=True)
        p.start()
        pipes.append(a)
        procs.append(p)
    io = spu_api.Io(3, _config())

    def call(msg):
        for c in pipes:
            c.send(msg)
        return [c.recv() for c in pipes]

    rows = []
    for item in spec:
        name = item["name"]
        x = data[item["x"]].astype(np.float32)
        try:
            t0 = time.perf_counter()
            if "forest" in item:
                params = [data[k].astype(np.float32) for k in item["forest"]["arrays"]]
                fn = _forest_fn(item["forest"]["depth"])
            else:
                params = [data[k].astype(np.float32) for k in item["params"]]
                fn = _layers_fn(item["layers"])
            names = [f"w{len(rows)}_in{k}" for k in range(1 + len(params))]
            exe, _ = spu_fe.compile(spu_fe.Kind.JAX, fn, [x, *params], {}, names,
                                    [libspu.Visibility.VIS_SECRET] * len(names),
                                    lambda outs: [f"w{len(rows)}_out{k}" for k in range(len(outs))])
            shares = [io.make_shares(p, libspu.Visibility.VIS_SECRET) for p in params]
            for r, c in enumerate(pipes):
                c.send(("set", {names[1 + k]: (s[r].meta, list(s[r].share_chunks))
                                for k, s in enumerate(shares)}))
            [c.recv() for c in pipes]
            setup_s = time.perf_counter() - t0
            exe_bytes = exe.SerializeToString()
            lat, ins, revs, out = [], [], [], None
            nbytes = None
            for rep in range(args.repeats + 1):  # the first call is a warm-up, not counted
                if rep == 1:
                    lat, ins, revs = [], [], []
                t1 = time.perf_counter()
                xs = io.make_shares(x, libspu.Visibility.VIS_SECRET)
                for r, c in enumerate(pipes):
                    c.send(("set", {names[0]: (xs[r].meta, list(xs[r].share_chunks))}))
                [c.recv() for c in pipes]
                ins.append(time.perf_counter() - t1)
                starts = [os.path.getsize(p) if os.path.exists(p) else 0 for p in logs]
                res = call(("run", exe_bytes))
                t2 = time.perf_counter()
                lat.append(max(r[0] for r in res))
                outs = []
                for rank_res in res:
                    s = libspu.Share()
                    s.meta, s.share_chunks = rank_res[1][0]
                    outs.append(s)
                out = io.reconstruct(outs)
                revs.append(time.perf_counter() - t2)
                counted = [_log_bytes(p, st) for p, st in zip(logs, starts)]
                if all(v is not None for v in counted):
                    nbytes = sum(counted)
            want = data[item["want"]]
            row = {"workload": name, "backend": "spu", "batch": int(len(x)),
                   "latency_s": statistics.median(lat), "setup_s": setup_s,
                   "input_s": statistics.median(ins), "reveal_s": statistics.median(revs),
                   "max_abs_err": float(np.max(np.abs(np.asarray(out).reshape(want.shape) - want))),
                   "repeats": args.repeats}
            if nbytes is not None:
                row["bytes"] = nbytes
            if item.get("classification") and want.ndim == 2 and want.shape[1] > 1:
                row["accuracy"] = float(np.mean(np.asarray(out).reshape(want.shape).argmax(1)
                                                == want.argmax(1)))
        except Exception as e:  # one failing workload must not hide the others
            row = {"workload": name, "backend": "spu", "error": f"{type(e).__name__}: {e}"[:300]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for c in pipes:
        c.send(("stop",))
    for p in procs:
        p.join(10)
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "spu": "0.9.5", "protocol": "ABY3", "field": "FM64",
                   "log_tail": open(logs[0], errors="replace").read()[-2000:]}, f)


if __name__ == "__main__":
    main()
