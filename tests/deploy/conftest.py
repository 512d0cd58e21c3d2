"""A real Flower deployment on loopback for the tests: one SuperLink and N SuperNodes.

``deployment(sites, tls=False)`` starts ``flower-superlink`` and one ``flower-supernode``
per node config on free 127.0.0.1 ports (FLWR_HOME under the test's tmp dir, telemetry
and update checks off) and returns the :class:`~veil.deploy.LocalDeployment`; every
process it started — SuperLink, SuperNodes, their executors and the site agents — is
killed by PID when the test ends, passed or failed. Skipped when Flower is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    pytest.importorskip("flwr", reason="needs the flower extra: pip install -e '.[flower]'")
    from veil.deploy import LocalDeployment

    started: list[LocalDeployment] = []

    def make(sites: Sequence[Mapping[str, Any]], tls: bool = False) -> LocalDeployment:
        dep = LocalDeployment(tmp_path / f"dep{len(started)}", sites, tls=tls)
        started.append(dep)
        dep.start()
        return dep

    yield make
    for dep in started:
        dep.stop()
