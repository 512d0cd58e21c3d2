"""Small pieces of the deployment: the envelope codec, the agent's private directory and
framing, node-config strings, the record check and ``veil deploy show``'s exit status."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the Flower transport needs the flower extra")

from flwr.app import ConfigRecord, RecordDict  # noqa: E402

from veil.deploy.agent import agent_dir, recv_frame, send_frame  # noqa: E402
from veil.deploy.local import read_result  # noqa: E402
from veil.deploy.processes import node_config_arg  # noqa: E402
from veil.errors import AbortError, ConfigError, MalformedMessageError  # noqa: E402
from veil.transport.flower import Envelope, pack, unpack  # noqa: E402


def test_envelope_round_trip() -> None:
    env = Envelope("stage", 4, b"\x00\xffbytes", {"site": 2, "epsilon": 0.5})
    assert unpack(pack(env)) == env


@pytest.mark.parametrize(
    "content",
    [RecordDict({}), RecordDict({"veil": ConfigRecord({"kind": "x", "round": 1})}),
     RecordDict({"veil": ConfigRecord({"kind": "x", "round": 1, "payload": "text",
                                        "meta": "{}"})}),
     RecordDict({"veil": ConfigRecord({"kind": "x", "round": 1, "payload": b"",
                                        "meta": "[1]"})})],
)
def test_foreign_content_is_a_malformed_message(content: RecordDict) -> None:
    with pytest.raises(MalformedMessageError):
        unpack(content)


def test_agent_directory_must_be_private(tmp_path: Path) -> None:
    d = tmp_path / "agent"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    with pytest.raises(ConfigError, match="0700"):
        agent_dir({"agent-dir": str(d)}, 1)
    os.chmod(d, 0o700)
    assert agent_dir({"agent-dir": str(d)}, 1) == d


def test_frames_carry_header_and_payload() -> None:
    a, b = socket.socketpair()
    payload = os.urandom(3 << 20)  # larger than one recv
    th = threading.Thread(target=send_frame, args=(a, {"kind": "k", "round": 3}, payload))
    th.start()
    header, got = recv_frame(b)
    th.join()
    assert header == {"kind": "k", "round": 3} and got == payload
    a.close()
    b.close()


def test_node_config_string_is_toml_values() -> None:
    s = node_config_arg({"data": '/d/a "b".csv', "partition-id": 2, "share-example-counts": True})
    assert s == 'data="/d/a \\"b\\".csv" partition-id=2 share-example-counts=true'


def _record(tmp: Path, status: str, aborted: bool) -> Path:
    rounds = [{"round": 0, "cohort": [0, 1], "survivors": [] if aborted else [0, 1],
               "duration_s": 1.0, **({"aborted": "AbortError: below threshold"} if aborted
                                      else {})}]
    rec = {"name": "x", "transport": "flower", "sites": ["0", "1"], "pipeline": ["a"],
           "rounds": rounds, "final": {"status": status, "rounds_completed": 0 if aborted
                                       else 1, "test_accuracy": None}}
    (tmp / "record.json").write_text(json.dumps(rec))
    return tmp


def test_a_failed_run_is_never_a_success(tmp_path: Path) -> None:
    d = _record(tmp_path, "aborted", aborted=True)
    with pytest.raises(AbortError, match="below threshold"):
        read_result(d, "finished:failed")
    with pytest.raises(AbortError):
        read_result(d, "finished:completed")  # Flower's status alone is not enough
    from veil.cli.main import main

    assert main(["deploy", "show", str(d)]) == 1
    ok = _record(tmp_path, "completed", aborted=False)
    assert read_result(ok, "finished:completed")["final"]["status"] == "completed"
    assert main(["deploy", "show", str(ok)]) == 0


def test_one_key_makes_a_simulation_config_a_deployed_one(tmp_path: Path) -> None:
    from tests.deploy.configs import write_config
    from veil.deploy.parts import check_deployable, config_diff, fingerprint
    from veil.federation import load_config

    path = write_config(tmp_path / "run.toml", "x")
    cfg = load_config(path)
    check_deployable(cfg)  # transport = "flower"
    sim = load_config(path, {"federation.transport": "simulation"})
    with pytest.raises(ConfigError, match="federation.transport = 'flower'"):
        check_deployable(sim)
    from veil.cli.main import main

    assert main(["deploy", "run", str(tmp_path / "sim.toml"), "--home", str(tmp_path),
                 "--superlink", "127.0.0.1:1", "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "sim.toml").write_text(path.read_text().replace('"flower"', '"simulation"'))
    assert main(["deploy", "run", str(tmp_path / "sim.toml"), "--home", str(tmp_path),
                 "--superlink", "127.0.0.1:1", "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(ConfigError, match="dropout_rate"):
        check_deployable(load_config(path, {"federation.dropout_rate": 0.1}))
    # the side-channel protections deploy (test_inprocess.py checks what they do)
    sec = write_config(tmp_path / "sec.toml", "s", secagg=True)
    for key, value in (("aggregation.fixed_deadlines", True), ("aggregation.site_delay_s", 0.1),
                       ("aggregation.pad_messages", True)):
        check_deployable(load_config(sec, {key: value, "aggregation.stage_deadline_s": 1.0}))
    # local keys may differ between the coordinator's and a site's copy; round keys not
    other = load_config(path, {"name": "y", "output_dir": "/elsewhere", "rounds": 5,
                               "aggregation.clip_norm": 2.0})
    assert config_diff(fingerprint(cfg), fingerprint(other)) == ["aggregation.clip_norm",
                                                                 "rounds"]


def test_a_missing_flower_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from veil.deploy.parts import require_flower

    monkeypatch.setitem(sys.modules, "flwr", None)  # import flwr raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'veil\[flower\]'"):
        require_flower()


def test_a_helper_process_exits_once_its_parent_is_gone(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    flag = tmp_path / "cleaned"
    code = ("import time; from veil.deploy.processes import exit_with_parent; "
            f"exit_with_parent({parent.pid}, lambda: open({str(flag)!r}, 'w').close()); "
            "time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.3)
        assert child.poll() is None  # the parent lives: the helper stays
        parent.kill()
        parent.wait()
        assert child.wait(timeout=20) == 0 and flag.exists()  # cleaned up, then gone
    finally:
        for p in (parent, child):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_fast_object_pulls_reaches_flowers_pull_back_off() -> None:
    # a SuperNode announces a message before its objects arrive: Flower's first retry
    # waited 1 s; veil's processes start it at 10 ms (if Flower renames these functions
    # or their keywords, this fails instead of the deployment silently slowing down)
    pytest.importorskip("flwr")
    from flwr.supercore.inflatable import inflatable_utils as iu

    from veil.deploy.executor import PULL_BACKOFF_CAP_S, PULL_BACKOFF_S, fast_object_pulls

    saved = {f: dict(f.__kwdefaults__) for f in (iu.pull_objects,
                                                 iu.pull_and_inflate_object_from_tree)}
    try:
        fast_object_pulls()
        for f in saved:
            assert f.__kwdefaults__["initial_backoff"] == PULL_BACKOFF_S == 0.01
            assert f.__kwdefaults__["backoff_cap"] == PULL_BACKOFF_CAP_S
        calls = []

        def flaky(obj_id: str) -> bytes:  # unavailable twice, then there
            calls.append(obj_id)
            if len(calls) < 3:
                raise iu.ObjectUnavailableError(obj_id)
            return b"x"

        assert iu.pull_objects(["a"], flaky) == {"a": b"x"} and len(calls) == 3
    finally:
        for f, kw in saved.items():
            f.__kwdefaults__ = kw
