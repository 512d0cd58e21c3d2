"""``veil infer --backend mpc MODEL INPUT``: private inference, printed beside plaintext.

MODEL is a veil IR file (``.npz`` from :func:`veil.models.ir.save`), a veil run directory,
or a named example model (``digits-mlp``, ``digits-cnn``, ``diabetes-rf``, …). INPUT is a
``.npy``/``.csv`` file of rows (N, *input_shape); without it a named model's own held-out
inputs are used. With ``--backend mpc`` three compute parties run as local OS processes
over mutual TLS (``--parties processes``, the default), as threads (``inprocess``), or are
already running elsewhere (``--addresses FILE --certs DIR``; start each with
``veil mpc party``). Only this process (the data and model owner) sees the result.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["register", "run", "BACKENDS"]


def register(sub: Any) -> None:
    """Add the ``infer`` sub-command (imports nothing heavy)."""
    p = sub.add_parser(
        "infer",
        help="private inference of a model on an input (mpc: three parties; fhe: CKKS)",
        description="Evaluate MODEL on INPUT without any compute party seeing either.",
    )
    p.add_argument("model", help="model .npz (veil IR), a run directory, or a named model "
                   "(digits-logreg, digits-mlp, digits-cnn, diabetes-linreg, diabetes-rf)")
    p.add_argument("input", nargs="?", help="inputs .npy or .csv (rows); default: the named "
                   "model's held-out inputs")
    p.add_argument("--backend", default="mpc", help="mpc (default) or fhe")
    p.add_argument("--batch", type=int, default=None, help="use the first N input rows")
    p.add_argument("--parties", default="processes", choices=["processes", "inprocess"],
                   help="mpc: local party processes over TLS (default) or threads")
    p.add_argument("--addresses", help="mpc: JSON file name -> [host, port] for p0, p1, p2 "
                   "and client (parties already started with `veil mpc party`)")
    p.add_argument("--certs", help="mpc: certificate directory (`veil mpc certs`)")
    p.add_argument("--deadline", type=float, default=30.0, help="abort if a party is silent "
                   "this long (s)")
    p.add_argument("--out", help="write the outputs as .npy")


def _inputs(args: argparse.Namespace) -> tuple[Any, np.ndarray]:
    from pathlib import Path

    import numpy as np

    from veil.errors import DataError

    x = None
    if args.input:
        path = Path(args.input)
        try:
            if path.suffix == ".csv":
                x = np.loadtxt(path, delimiter=",", ndmin=2)
            else:
                x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {path}: {e}") from None
    if args.model.endswith(".npz"):
        from veil.models.ir import load

        model = load(args.model)
        if x is None:
            from veil.errors import ConfigError

            raise ConfigError("a model file needs an INPUT file", key="input")
    else:
        from veil.securecompute.recommend_models import resolve_model

        nm = resolve_model(args.model, args.input)
        model = nm.model
        x = nm.inputs if x is None else x
    x = np.asarray(x, dtype=np.float64)
    if x.shape[1:] != model.input_shape and x.ndim == 2:
        x = x.reshape((len(x), *model.input_shape))  # flat rows of images
    if args.batch is not None:
        x = x[: args.batch]
    return model, x


def _mpc(model: Any, x: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    from veil.securecompute.mpc import MpcConfig, MpcSession

    cfg = MpcConfig(deadline_s=args.deadline)
    if args.addresses:
        import json
        from pathlib import Path

        from veil.errors import ConfigError
        from veil.securecompute.mpc.processes import _connect
        from veil.securecompute.mpc.roles import Client

        if not args.certs:
            raise ConfigError("--addresses needs --certs DIR", key="certs")
        spec = json.loads(Path(args.addresses).read_text())
        addrs = {k: (v[0], int(v[1])) for k, v in spec.items()}
        ch = _connect("client", addrs, Path(args.certs), 60.0)
        client = Client(ch, model, cfg)
        try:
            y = client.infer(x)
        finally:
            client.close()
            ch.close()
        assert client.last is not None
        p = client.last
        return y, {"setup_s": client.setup_s, "input_s": p.input_s, "online_s": p.online_s,
                   "reveal_s": p.reveal_s, "rounds": p.rounds, "bytes": p.bytes}
    if args.parties == "inprocess":
        sess: Any = MpcSession(model, cfg)
    else:
        from veil.securecompute.mpc.processes import ProcessSession

        sess = ProcessSession(model, cfg, cert_dir=args.certs)
    with sess:
        res = sess.infer(x)
    return res.output, res.summary()


def _fhe(model: Any, x: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    from veil.securecompute.fhe.run import infer_cli

    return infer_cli(model, x, args)


# backend name -> function(model, inputs, args) -> (outputs, cost summary); one line each.
BACKENDS: dict[str, Callable[[Any, np.ndarray, argparse.Namespace], tuple[np.ndarray, dict]]] = {
    "mpc": _mpc,
    "fhe": _fhe,
}


def run(args: argparse.Namespace) -> int:
    """Run ``veil infer``."""
    import time

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from veil.errors import ConfigError
    from veil.models.ir import evaluate

    if args.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {args.backend!r}; choose one of {sorted(BACKENDS)}",
                          key="backend")
    model, x = _inputs(args)
    t0 = time.perf_counter()
    want = evaluate(model, x)
    plain_s = time.perf_counter() - t0
    y, cost = BACKENDS[args.backend](model, x, args)
    y = y.reshape(want.shape)
    con = Console()
    con.print(f"[bold]{model.name}[/] on {len(x)} input(s), backend [bold]{args.backend}[/]")
    if model.task == "classification" and want.shape[-1] > 1:
        agree = float(np.mean(np.argmax(y, -1) == np.argmax(want, -1)))
        con.print(f"predicted classes: {np.argmax(y, -1)[:20].tolist()}"
                  f"{' …' if len(x) > 20 else ''}")
        con.print(f"agreement with plaintext argmax: {agree:.2%}")
    else:
        shown = np.round(y.reshape(len(x), -1)[:10, 0], 4).tolist()
        con.print(f"outputs: {shown}; plaintext: {np.round(want.reshape(len(x), -1)[:10, 0], 4).tolist()}")
    con.print(f"max |private − plaintext|: {float(np.max(np.abs(y - want))):.3g}")
    t = Table("phase", "seconds")
    for k in ("setup_s", "input_s", "online_s", "reveal_s"):
        if k in cost:
            t.add_row(k[:-2], f"{cost[k]:.4f}")
    t.add_row("plaintext (all)", f"{plain_s:.4f}")
    con.print(t)
    con.print(f"rounds {cost.get('rounds')}, bytes {cost.get('bytes'):,}")
    if args.out:
        np.save(args.out, y)
        con.print(f"written: {args.out}")
    return 0
