"""The Flower ServerApp and ClientApp of a veil deployment (``veil.deploy.apps:server`` /
``veil.deploy.apps:client``; the FAB written by :mod:`veil.deploy.fab` points at them).

The ClientApp is used only with ``isolation = "subprocess"`` (by default a site's
messages are answered by its site executor, :mod:`veil.deploy.executor`, and no ClientApp
runs). It is a thin forwarder (it imports neither torch nor the site's data): Flower
starts it afresh for every message, it hands the veil envelope to the SuperNode's site
agent (:mod:`veil.deploy.agent`) and returns the agent's answer. The ServerApp runs
:func:`veil.deploy.server.serve`.
"""

from __future__ import annotations

from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

__all__ = ["server", "client"]

server = ServerApp()
client = ClientApp()


@server.main()
def _main(grid: Any, context: Any) -> None:
    from veil.deploy.server import serve

    serve(grid, context)


@client.query("veil")
def _site(msg: Any, context: Any) -> Any:
    from veil.deploy.agent import forward
    from veil.transport.flower import reply, unpack

    env = unpack(msg.content)
    out = forward(dict(context.node_config), int(context.node_id), int(context.run_id), env)
    return reply(msg, out)
