"""``veil deploy ...``: the same veil run across machines on Flower's SuperLink and SuperNodes.

Sub-commands (guide: docs/deployment.md):

* ``veil deploy certs DIR --host NAME...`` — a CA and the SuperLink's TLS certificate;
* ``veil deploy superlink --home DIR [--host 0.0.0.0] [--port P] [--certs DIR]`` — runs
  ``flower-superlink`` in the foreground (this process becomes it: stop it by its PID);
* ``veil deploy supernode --home DIR --superlink HOST:PORT --config RUN.toml
  --partition-id I [--data FILE [--test FILE] | --dataset NAME] [--root-cert CA]`` — runs
  ``flower-supernode`` for one site, with the site executor beside it (the site's own
  run config and data stay on its machine);
* ``veil deploy run CONFIG --home DIR --superlink HOST:PORT --out DIR [--root-cert CA]`` —
  submits the run, waits for it, prints the summary; exit 0 when every round completed, 1
  when the run failed or a round aborted;
* ``veil deploy show DIR`` — the record, round by round (exit 1 unless completed).

Every Flower process gets FLWR_HOME = ``--home``, telemetry and update checks off, and no
runtime dependency installation.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``deploy`` sub-command (imports nothing heavy)."""
    p = sub.add_parser(
        "deploy",
        help="run across machines on Flower's SuperLink and SuperNodes (docs/deployment.md)",
    )
    d = p.add_subparsers(dest="deploy_command", metavar="STEP", required=True)

    c = d.add_parser("certs", help="a CA and the SuperLink's TLS certificate")
    c.add_argument("dir", help="where ca.crt, superlink.crt and superlink.key go")
    c.add_argument("--host", action="append", required=True,
                   help="DNS name or IP address the sites dial (repeat for several)")
    c.add_argument("--days", type=int, default=365, help="validity in days")
    c.add_argument("--stage-sites", type=int, default=0, help="also a stage-link CA with "
                   "certificates for the coordinator and sites 0..N-1 (in DIR/stage)")

    s = d.add_parser("superlink", help="start the SuperLink (foreground)")
    s.add_argument("--home", required=True, help="FLWR_HOME of this SuperLink")
    s.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0: all)")
    s.add_argument("--port", type=int, default=9092, help="the SuperLink's one port")
    s.add_argument("--certs", help="directory from `veil deploy certs` (omit: --insecure)")

    n = d.add_parser("supernode", help="start one site's SuperNode (foreground)")
    n.add_argument("--home", required=True, help="FLWR_HOME of this SuperNode")
    n.add_argument("--superlink", required=True, help="the SuperLink's HOST:PORT")
    n.add_argument("--config", required=True, help="this site's own copy of the run config "
                   "(the site refuses a coordinator whose config differs)")
    n.add_argument("--partition-id", type=int, required=True, help="this site's id")
    src = n.add_mutually_exclusive_group()
    src.add_argument("--data", help="this site's own file (the run config's data.files "
                     "entry and data.schema say how it is read)")
    src.add_argument("--dataset", help="a bundled data set (default: data.dataset of the run)")
    n.add_argument("--test", help="this site's own test file (if its data.files entry has one)")
    n.add_argument("--share-example-counts", action="store_true",
                   help="let the server weight by this site's number of examples")
    n.add_argument("--share-evaluation", action="store_true",
                   help="send the coordinator this site's test metrics of the final model "
                   "(its test size and accuracy; with data.files the coordinator has no "
                   "test data of its own)")
    n.add_argument("--root-cert", help="ca.crt from `veil deploy certs` (omit: --insecure)")
    n.add_argument("--port", type=int, default=9094, help="local port of its runtime API")
    n.add_argument("--agent-dir", help="private directory of the site's executor/agent")
    n.add_argument("--identity", help="this site's enrolled key (site-<id>.key from `veil "
                   "identity new`): SecAgg+ runs its malicious-server mode; needs --roster")
    n.add_argument("--roster", help="the enrolled sites' roster.json (`veil identity roster`)")
    n.add_argument("--roster-digest", help="pin the roster to this digest (hex)")
    n.add_argument("--stage-certs", help="directory holding stage-ca.crt and this site's "
                   "site-<id>.crt/.key (`veil deploy certs --stage-sites`): lets the site "
                   "join a coordinator's direct stage link")
    n.add_argument("--isolation", choices=["veil", "subprocess"], default="veil",
                   help="veil: one long-lived site executor beside the SuperNode (default); "
                   "subprocess: Flower's ClientApp process per message")

    r = d.add_parser("run", help="submit a veil run and wait for it")
    r.add_argument("config", help="the veil TOML run config (read on the SuperLink machine)")
    r.add_argument("--home", required=True, help="FLWR_HOME for the flwr CLI")
    r.add_argument("--superlink", required=True, help="the SuperLink's HOST:PORT")
    r.add_argument("--out", required=True, help="run directory for record.json and model.pt")
    r.add_argument("--root-cert", help="ca.crt from `veil deploy certs` (omit: --insecure)")
    r.add_argument("--stage-timeout", type=float, default=30.0,
                   help="seconds each protocol stage waits for the sites")
    r.add_argument("--train-timeout", type=float, default=0.0,
                   help="seconds the training exchange waits (0: --stage-timeout)")
    r.add_argument("--min-nodes", type=int, default=0, help="SuperNodes to wait for "
                   "(0: data.sites)")
    r.add_argument("--timeout", type=float, default=3600.0, help="give up after this long")
    r.add_argument("--roster", help="the enrolled sites' roster.json: SecAgg+ runs its "
                   "malicious-server mode (every site needs --identity and --roster)")
    r.add_argument("--stage-listen", help="HOST:PORT the coordinator binds for the direct "
                   "stage link (SecAgg+ stages 2-5 over mutual TLS; omit: Flower only)")
    r.add_argument("--stage-address", help="HOST:PORT the sites dial (default: --stage-listen)")
    r.add_argument("--stage-certs", help="directory holding stage-ca.crt and "
                   "coordinator.crt/.key (`veil deploy certs --stage-sites`)")

    w = d.add_parser("show", help="summarise a deployed run's record (per round)")
    w.add_argument("dir", help="the run directory given to `veil deploy run --out`")


def _exec(cmd: list[str], home: str) -> int:
    from veil.deploy.processes import flower_env

    os.makedirs(home, exist_ok=True)
    sys.stdout.flush()
    os.execve(cmd[0], cmd, flower_env(os.path.abspath(home)))
    return 0  # pragma: no cover - execve does not return


def run(args: argparse.Namespace) -> int:
    """Run one ``veil deploy`` step."""
    from veil.deploy import processes as pr

    step = args.deploy_command
    if step == "certs":
        from veil.deploy.tls import write_superlink_certs

        ca, crt, key = write_superlink_certs(args.dir, args.host, args.days)
        print(f"wrote {ca} (give it to every site), {crt} and {key} (keep on the SuperLink)")
        if args.stage_sites:
            from veil.deploy.stagelink import write_stage_certs

            st = write_stage_certs(os.path.join(args.dir, "stage"), args.stage_sites, args.days)
            print(f"wrote the stage link's {st['ca']} (every machine), coordinator.crt/.key "
                  f"(the SuperLink machine) and site-<id>.crt/.key (each to its site only) "
                  f"in {st['ca'].parent}")
        return 0
    if step == "superlink":
        cmd = [pr.flower_bin("flower-superlink"), "--host", args.host, "--port", str(args.port),
               "--disable-runtime-dependency-installation"]
        if args.certs:
            base = os.path.abspath(args.certs)
            cmd += ["--ssl-ca-certfile", f"{base}/ca.crt", "--ssl-certfile",
                    f"{base}/superlink.crt", "--ssl-keyfile", f"{base}/superlink.key"]
        else:
            cmd.append("--insecure")
        return _exec(cmd, args.home)
    if step == "supernode":
        return _supernode(args)
    if step == "show":
        return _show(args.dir)
    return _run(args)


def _check_config(path: str) -> Any:
    """The run config, checked for a deployment (Flower installed, transport = flower)."""
    from veil.deploy.parts import check_deployable, require_flower
    from veil.federation.config import load_config

    require_flower()
    cfg = load_config(path)
    check_deployable(cfg)
    return cfg


def _supernode(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    from veil.deploy import processes as pr

    _check_config(args.config)
    nc: dict[str, Any] = {"partition-id": args.partition_id,
                          "config": os.path.abspath(args.config)}
    if args.data:
        nc["data"] = os.path.abspath(args.data)
    elif args.dataset:
        nc["dataset"] = args.dataset
    if args.test:
        nc["test"] = os.path.abspath(args.test)
    if args.agent_dir:
        nc["agent-dir"] = os.path.abspath(args.agent_dir)
    for key in ("identity", "roster"):
        if getattr(args, key):
            nc[key] = os.path.abspath(getattr(args, key))
    if args.roster_digest:
        nc["roster-digest"] = args.roster_digest
    if args.share_example_counts:
        nc["share-example-counts"] = True
    if args.share_evaluation:
        nc["share-evaluation"] = True
    if args.stage_certs:
        base = os.path.abspath(args.stage_certs)
        me = f"site-{args.partition_id}"
        nc.update({"stage-cert": f"{base}/{me}.crt", "stage-key": f"{base}/{me}.key",
                   "stage-ca": f"{base}/stage-ca.crt"})
    root = os.path.abspath(args.root_cert) if args.root_cert else None
    cmd = pr.supernode_command(args.superlink, nc, args.port, root, args.isolation)
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if args.isolation == "veil":  # the site executor outlives nothing: it follows this PID
        pid_file = Path(nc.get("agent-dir", home)) / "agent.pid"
        with open(home / "executor.log", "ab") as log:
            subprocess.Popen(pr.executor_command(args.port, os.getpid(), pid_file),
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             env=pr.flower_env(home), start_new_session=True)
    return _exec(cmd, str(home))


def _show(run_dir: str) -> int:
    import json
    from pathlib import Path

    from veil.errors import ConfigError

    path = Path(run_dir) / "record.json"
    if not path.exists():
        raise ConfigError(f"{path} not found: give the directory of `veil deploy run --out`")
    rec = json.loads(path.read_text())
    print(f"{rec['name']}: transport {rec['transport']}, sites {rec['sites']}, "
          f"pipeline {' -> '.join(rec['pipeline'])}")
    for r in rec.get("rounds", []):
        acc = r.get("test_accuracy")
        state = r.get("aborted") or (f"survivors {r['survivors']}" if "survivors" in r
                                     else "membership hidden")
        eps = r.get("epsilon_reported") or {}
        print(f"  round {r['round']}: cohort {r.get('cohort', 'hidden')}, {state}"
              + (f", accuracy {acc:.4f}" if acc is not None else "")
              + (f", ε reported {eps}" if eps else "")
              + (f", {r['duration_s']:.1f} s" if "duration_s" in r else ""))
    for site, m in rec.get("site_metrics", {}).items():
        vals = ", ".join(f"{k} {v:.4f}" for k, v in m.items()
                         if k not in ("task", "n", "notes") and isinstance(v, float))
        print(f"  site {site} (own test data, n = {m.get('n')}): {vals}")
    f = rec.get("final", {})
    print(f"final: {f.get('status')}, {f.get('rounds_completed')} rounds, "
          f"accuracy {f.get('test_accuracy')}")
    return 0 if f.get("status") == "completed" else 1


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from veil.deploy import runs
    from veil.deploy.local import read_result
    from veil.errors import AbortError

    _check_config(args.config)
    home = Path(args.home).resolve()
    root = os.path.abspath(args.root_cert) if args.root_cert else None
    runs.write_connection(home, args.superlink, root)
    app = runs.write_app(home / "veil-app")
    out = Path(args.out).resolve()
    rc = {
        "veil-config": str(Path(args.config).resolve()),
        "out-dir": str(out),
        "stage-timeout": float(args.stage_timeout),
        "train-timeout": float(args.train_timeout),
        "min-nodes": int(args.min_nodes),
        "roster": os.path.abspath(args.roster) if args.roster else "",
    }
    if args.stage_listen:
        from veil.deploy.stagelink import StageLinkConfig

        base = os.path.abspath(args.stage_certs or ".")
        rc.update({"stage-listen": args.stage_listen,
                   "stage-address": args.stage_address or args.stage_listen,
                   "stage-cert": f"{base}/coordinator.crt",
                   "stage-key": f"{base}/coordinator.key", "stage-ca": f"{base}/stage-ca.crt"})
        StageLinkConfig.from_run_config(rc)  # a malformed address is refused here
    out.mkdir(parents=True, exist_ok=True)
    (out / "record.json").unlink(missing_ok=True)
    run_id, status = runs.flwr_run(home, app, rc, args.timeout, record=out / "record.json")
    if status != "finished:completed":  # keep Flower's log of the ServerApp for the post-mortem
        (out / "serverapp.log").write_text(runs.run_log(home, run_id))
    try:
        rec = read_result(out, status)
    except AbortError as exc:
        print(f"run {run_id}: FAILED — {exc}", file=sys.stderr)
        return 1
    f = rec["final"]
    acc = f.get("test_accuracy")
    eps = rec.get("privacy", {}).get("epsilon_reported_per_site") or {}
    print(f"run {run_id}: {f['rounds_completed']} rounds completed over Flower; "
          f"test accuracy {acc if acc is None else round(acc, 4)}"
          + (f"; ε reported by the sites: {eps}" if eps else "")
          + f"; record: {out / 'record.json'}")
    return 0
