"""Real Flower deployments on loopback for the tests: one SuperLink and N SuperNodes.

``deployment(sites, tls=False)`` starts ``flower-superlink`` and one ``flower-supernode``
per node config on free 127.0.0.1 ports (FLWR_HOME under the test's tmp dir, telemetry
and update checks off) and returns the :class:`~veil.deploy.LocalDeployment`.
``shared_deployment`` is one three-site deployment for a whole test module (start-up is
most of a short run's time): every site's own run config is the file
``shared_deployment.config``, which a test writes before each run. Every process a
fixture started — SuperLink, SuperNodes, their executors and the site agents — is killed
by PID when its scope ends, passed or failed. Skipped when Flower is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.configs import site_configs


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


@pytest.fixture(scope="module")
def shared_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("flwr", reason="needs the flower extra: pip install -e '.[flower]'")
    from veil.deploy import LocalDeployment

    root = tmp_path_factory.mktemp("shared")
    config = root / "run.toml"
    dep = LocalDeployment(root / "dep", site_configs(config, 3), stage_link=True)
    dep.config = config  # type: ignore[attr-defined]
    try:
        dep.start()
        yield dep
    finally:
        dep.stop()
