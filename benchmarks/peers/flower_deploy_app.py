"""Flower's own SecAgg+ workflow as a deployed Flower app (the peer of `veil bench deploy`).

`veil bench deploy` bundles this file with `flower_secagg.py` (whose `_apps` builds the
ServerApp and ClientApp: FedAvg through `SecAggPlusWorkflow` on the server and
`secaggplus_mod` on the clients) and a `params.json` (sites, dim, k, t, rounds, timeout,
out), and runs it with `flwr run` on the same SuperLink and SuperNodes as veil's run.
Rounds alternate plain and SecAgg+; the per-round seconds of each are written to
`params["out"]` as JSON when the ServerApp ends. Needs only Flower and numpy.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from flower_secagg import _apps
from flwr.serverapp import ServerApp

PARAMS = json.loads((Path(__file__).parent / "params.json").read_text())
TIMES: dict[str, list[float]] = {"plain": [], "secagg+": []}
_pair = _apps(SimpleNamespace(**PARAMS), TIMES)
_inner = _pair[0]
client = _pair[1]  # plain assignments: Flower validates component names by parsing the file
server = ServerApp()


@server.main()
def _main(grid: Any, context: Any) -> None:
    try:
        _inner(grid, context)
    finally:
        Path(PARAMS["out"]).write_text(json.dumps(TIMES))
