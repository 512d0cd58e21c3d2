"""Every command of docs/deployment.md, run as written (loopback, TLS, three sites).

The guide's ``toml`` block is the run config; each ``veil ...`` line of its ``bash``
blocks runs with ``SUPERLINK_HOST=127.0.0.1`` and a free ``SUPERLINK_PORT``: the
certificates, the SuperLink, the SuperNodes (three hospitals, each with its own copy of
the config and its own CSV file from examples/own_sites under /data/ of its "machine"
directory), the run and the record summary. The SuperLink and
SuperNodes run in the foreground as the guide says, so the test starts them as
background processes and kills them (and their children) by PID at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="needs the flower extra: pip install -e '.[flower]'")

from veil.deploy.processes import Proc, _wait_port, free_port  # noqa: E402

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_sites"
VEIL = str(Path(sys.executable).parent / "veil")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), flags=re.S)


def _commands() -> list[str]:
    return [ln.strip() for b in _blocks("bash") for ln in b.splitlines()
            if ln.strip().startswith("veil ")]


def _argv(cmd: str, env: dict[str, str]) -> list[str]:
    import shlex

    words = shlex.split(os.path.expandvars(cmd.replace("$SUPERLINK_HOST", env["SUPERLINK_HOST"])
                                           .replace("$SUPERLINK_PORT", env["SUPERLINK_PORT"])
                                           .replace("$STAGE_PORT", env["STAGE_PORT"])))
    return [VEIL, *words[1:]]


def _background(name: str, argv: list[str], cwd: Path) -> Proc:
    log = cwd / f"{name}.log"
    with open(log, "ab") as f:
        p = subprocess.Popen(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    return Proc(name, p, log)


@pytest.mark.slow
def test_every_command_of_the_guide(tmp_path: Path) -> None:
    cmds = _commands()
    kinds = [c.split()[2] for c in cmds]
    assert kinds == ["certs", "superlink", "supernode", "supernode", "run", "show"], kinds
    coord = tmp_path / "coordinator"
    coord.mkdir()
    (coord / "deploy.toml").write_text(_blocks("toml")[0])
    for name in ("hospital_a", "hospital_b", "hospital_c", "hospital_c_test"):
        shutil.copy(EXAMPLE / f"{name}.csv", coord)  # where the simulation reads them
    env = {"SUPERLINK_HOST": "127.0.0.1", "SUPERLINK_PORT": str(free_port()),
           "STAGE_PORT": str(free_port())}
    procs: list[Proc] = []
    try:
        certs, superlink, csv_site, test_site, run, show = cmds
        subprocess.run(_argv(certs, env), cwd=coord, check=True, timeout=120)
        sl = _background("superlink", _argv(superlink, env), coord)
        procs.append(sl)
        _wait_port(sl, "127.0.0.1", int(env["SUPERLINK_PORT"]), 120)
        sites = []
        a_site, c_site = csv_site, test_site
        plans = [(a_site, {}), (a_site, {"--partition-id 0": "--partition-id 1",
                                        "hospital_a": "hospital_b"}), (c_site, {})]
        for i, (cmd, subst) in enumerate(plans):
            d = tmp_path / f"site{i}"
            (d / "data").mkdir(parents=True)
            shutil.copy(coord / "certs" / "ca.crt", d / "ca.crt")
            (d / "stage").mkdir()  # the stage CA and this site's own pair, nothing else
            for name in ("stage-ca.crt", f"site-{i}.crt", f"site-{i}.key"):
                shutil.copy(coord / "certs" / "stage" / name, d / "stage" / name)
            shutil.copy(coord / "deploy.toml", d / "deploy.toml")  # the site's own copy
            for k, v in subst.items():
                cmd = cmd.replace(k, v)
            argv = [w.replace("/data/", f"{d}/data/") for w in _argv(cmd, env)]
            for w in argv:
                if w.startswith(f"{d}/data/"):
                    shutil.copy(EXAMPLE / Path(w).name, w)
            argv += ["--port", str(free_port()), "--agent-dir", str(_agent_dir(i))]
            sites.append(_background(f"site{i}", argv, d))
        procs.extend(sites)
        t0 = time.monotonic()
        res = subprocess.run(_argv(run, env), cwd=coord, capture_output=True, text=True,
                             timeout=1500)
        assert res.returncode == 0, res.stderr + "\n".join(p.log_tail() for p in procs)
        assert "ε reported by the sites" in res.stdout
        out = subprocess.run(_argv(show, env), cwd=coord, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert "final: completed, 2 rounds" in out.stdout
        import json

        rec = json.loads((coord / "runs" / "deployed" / "record.json").read_text())
        assert "stage link" in rec["stage_transport"]  # SecAgg+ stages 2-5 over mutual TLS
        assert time.monotonic() - t0 < 1500
        assert "Starting insecure" not in "".join(p.log_tail(10**6) for p in procs)
    finally:
        for p in procs:
            p.agent_dir = None
            p.stop(timeout_s=3)
        for i in range(3):
            pid = _agent_dir(i) / "agent.pid"
            if pid.exists():
                try:
                    os.kill(int(pid.read_text()), 9)
                except ProcessLookupError:
                    pass


def _agent_dir(i: int) -> Path:
    d = Path(f"/tmp/veil-guide-{os.getpid()}") / f"n{i}"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d.parent, 0o700)
    return d
