"""The site executor: one long-lived process per SuperNode that answers veil's messages.

Flower 1.42 runs a ClientApp by starting a fresh ``flwr-clientapp`` process for every
message (Python start-up, Flower imports, unpacking the app bundle), and its SuperNode
looks for new messages every 3 s and for replies every 0.5 s. A SecAgg+ round is five
message exchanges, so those costs, not the protocol, set a deployed round's time.
This module removes both:

* the SuperNode runs with ``--isolation process`` (it starts no executor of its own) and
  this process takes its place: it acquires each ClientApp task from the SuperNode's local
  runtime API, pulls the task's message, answers it with the site's
  :class:`~veil.deploy.site.SiteRuntime` kept in **this process's memory** (data, trainer,
  stage state, SecAgg+ secrets and ledger, never written into a Flower record), and pushes
  the reply and the task's status back — the same runtime API calls ``flwr-clientapp``
  makes, through Flower's own client functions;
* :func:`fast_supernode` starts Flower's SuperNode with its two fixed waits capped at
  ``VEIL_SUPERNODE_POLL_S`` (default 0.05 s);
* :func:`fast_object_pulls` (in the executor, the SuperNode and the coordinator's
  ServerApp): Flower pulls a message's objects with an exponential back-off that starts
  at 1 s when an object is not there yet — and a SuperNode announces a message before its
  objects have arrived, so nearly every pull waited 1 s (sometimes 1 + 2 s). Measured
  on 3 sites: ``pull_task_input`` took 1.1–3.3 s of a 3 s exchange. The back-off then
  starts at 10 ms and is capped at 0.1 s (the same retries, sooner).

The executor never runs code from the app bundle the coordinator submitted: a site runs
only the veil it installed. It handles only veil messages (``query.veil``); anything else
is answered with an error. It exits when its parent (``--parent-pid``) is gone, and writes
its PID to ``--pid-file``. Flower's internal runtime API is used as 1.42 defines it (the
``veil[flower]`` extra pins ``flwr==1.42.*``).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["run_executor", "fast_supernode", "fast_object_pulls", "main"]

#: seconds between the executor's task requests
TASK_POLL_S = 0.02


def _answer(agent: Any, message: Any, context: Any) -> Any:
    """The reply to one Flower message, from the site's runtime in this process."""
    from veil.deploy.agent import _env_header
    from veil.errors import MalformedMessageError
    from veil.transport.flower import MESSAGE_TYPE, Envelope, reply, unpack

    if message.metadata.message_type != MESSAGE_TYPE:
        return reply(message, Envelope("error", -1, b"", {
            "error": "MalformedMessageError",
            "message": f"a veil site answers {MESSAGE_TYPE} only"}))
    try:
        env = unpack(message.content)
    except MalformedMessageError as exc:
        return reply(message, Envelope("error", -1, b"", {"error": type(exc).__name__,
                                                           "message": str(exc)}))
    header = {"run_id": int(context.run_id), "node_config": dict(context.node_config),
              **_env_header(env)}
    out = agent.handle(header, env.payload)
    return reply(message, out)


def _run_task(agent: Any, address: str, token: str, insecure: bool,
              certificates: bytes | None) -> None:
    from flwr.common.constant import SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    client = RuntimeHttpClient.from_server_address(
        server_address=address, insecure=insecure, root_certificates=certificates,
        interceptors=[RuntimeTokenHttpInterceptor(token)],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    context, status, details = None, SubStatus.FAILED, "veil site executor failed"
    try:
        heartbeat.start()
        message, context, _run, _fab = pull_task_input(client)  # the bundle is not run
        out = _answer(agent, message, context)
        heartbeat.stop()
        push_message(client, out, context)
        status, details = SubStatus.COMPLETED, ""
    finally:
        if heartbeat.is_running:
            heartbeat.stop()
        push_task_output(client=client, context=context, sub_status=status, details=details)
        client.close()


#: first wait and cap of Flower's object-pull back-off in veil's processes (seconds)
PULL_BACKOFF_S, PULL_BACKOFF_CAP_S = 0.01, 0.1


def fast_object_pulls() -> None:
    """Start Flower's object-pull retries at 10 ms instead of 1 s, in this process.

    Sets the keyword defaults of Flower 1.42's ``pull_objects`` and
    ``pull_and_inflate_object_from_tree`` (what every caller uses); nothing else changes.
    """
    from flwr.supercore.inflatable import inflatable_utils as iu

    for fn in (iu.pull_objects, iu.pull_and_inflate_object_from_tree):
        kw = dict(fn.__kwdefaults__ or {})
        if "initial_backoff" in kw:
            kw.update(initial_backoff=PULL_BACKOFF_S, backoff_cap=PULL_BACKOFF_CAP_S)
            fn.__kwdefaults__ = kw


def _warm_up() -> None:
    import importlib

    for name in ("torch", "veil.deploy.site", "veil.deploy.parts", "veil.federation.build",
                 "veil.protocols.secagg"):
        importlib.import_module(name)


def run_executor(
    address: str,
    insecure: bool = True,
    certificates: bytes | None = None,
    poll_s: float = TASK_POLL_S,
    parent_pid: int | None = None,
) -> None:
    """Serve the SuperNode at ``address`` (its runtime API) until killed.

    Args:
        address: ``host:port`` of the SuperNode's runtime API (its ``--port``).
        insecure: plain HTTP to the runtime API (it listens on 127.0.0.1 by default).
        certificates: CA certificate of the runtime API's TLS certificate, if it has one.
        poll_s: seconds between task requests.
        parent_pid: exit when this process is gone.
    """
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
    from flwr.supercore.constant import TaskType
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    from veil.deploy.agent import _Agent
    from veil.deploy.processes import exit_with_parent

    if parent_pid:
        exit_with_parent(parent_pid)
    fast_object_pulls()
    # warm up while the SuperNode connects: the first message (hello) then finds torch and
    # the site's modules loaded instead of importing them inside the coordinator's deadline
    threading.Thread(target=_warm_up, daemon=True).start()
    agent = _Agent()  # one SiteRuntime per run, in this process's memory
    client = RuntimeHttpClient.from_server_address(
        server_address=address, insecure=insecure, root_certificates=certificates,
        interceptors=[], retry_invoker=make_simple_http_retry_invoker(),
    )
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    while True:
        try:
            res = client.AcquireTask(request)
        except Exception as exc:  # noqa: BLE001 - the SuperNode is starting or restarting
            print(f"veil executor: runtime API not reachable ({type(exc).__name__})",
                  file=sys.stderr, flush=True)
            time.sleep(0.5)
            continue
        if res.HasField("task") and res.token:
            try:
                _run_task(agent, address, res.token, insecure, certificates)
            except Exception as exc:  # noqa: BLE001 - one failed task, not the site
                print(f"veil executor: task failed: {type(exc).__name__}: {exc}",
                      file=sys.stderr, flush=True)
            continue  # the next stage's message is usually already waiting
        time.sleep(poll_s)


def fast_supernode(argv: list[str]) -> int:
    """Run ``flower-supernode ARGS`` with its fixed waits (3 s for new messages, 0.5 s for
    replies) capped at ``VEIL_SUPERNODE_POLL_S`` seconds."""
    import time as _time

    import flwr.supernode.start_client_internal as sci
    from flwr.supernode.cli import flower_supernode

    cap = float(os.environ.get("VEIL_SUPERNODE_POLL_S", "0.05"))

    class _Clock:
        def __getattr__(self, name: str) -> Any:
            return getattr(_time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            _time.sleep(min(float(seconds), cap))

    sci.time = _Clock()  # type: ignore[assignment]
    fast_object_pulls()
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m veil.deploy.executor --runtime HOST:PORT [--parent-pid P] [--pid-file F]``
    or ``python -m veil.deploy.executor supernode ARGS...`` (the fast SuperNode)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["supernode"]:
        return fast_supernode(args[1:])
    ap = argparse.ArgumentParser(description="veil site executor (beside a SuperNode)")
    ap.add_argument("--runtime", required=True, help="the SuperNode's runtime API HOST:PORT")
    ap.add_argument("--parent-pid", type=int, default=None)
    ap.add_argument("--pid-file", default=None)
    ns = ap.parse_args(args)
    if ns.pid_file:
        Path(ns.pid_file).write_text(str(os.getpid()))
    run_executor(ns.runtime, parent_pid=ns.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
