"""Each deployed site reads its own file with the run's declared schema (data.files).

The three hospitals of examples/own_sites, each file copied to its own "machine"
directory under a local name: a SuperNode's node config points at its copy, and the site
reads it with :func:`veil.data.load_site` — the per-site preprocessing and holdout of the
simulation. The coordinator holds no data (the model's input shape is the sites'). The
deployed model must equal the simulation of the same config and seed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the Flower transport needs the flower extra")

from tests.deploy.fakegrid import FakeGrid  # noqa: E402
from veil.deploy.server import DeployServer  # noqa: E402
from veil.errors import ConfigError  # noqa: E402
from veil.federation import build_federation, load_config  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_sites"
FILES = ["hospital_a.csv", "hospital_b.csv", "hospital_c.csv"]


def _config(tmp: Path, secagg: bool) -> Path:
    text = (EXAMPLE / "hospitals.toml").read_text()
    text = text.replace("examples/own_sites/", f"{EXAMPLE}/").replace("rounds = 15", "rounds = 2")
    text += '\n[federation]\ntransport = "flower"\n'
    if secagg:
        text += '\n[aggregation]\nsummation = "secagg"\nquantize_range = 4.0\n'
    text = f'output_dir = "{tmp / "sim"}"\n' + text
    path = tmp / "hospitals.toml"
    path.write_text(text)
    return path


def _sites(tmp: Path, cfg: Path, share_counts: bool = False) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i, name in enumerate(FILES):
        machine = tmp / f"machine{i}"
        machine.mkdir()
        own = shutil.copy(EXAMPLE / name, machine / "our_patients.csv")
        nc: dict[str, object] = {"partition-id": i, "config": str(cfg), "data": str(own),
                                 "share-example-counts": share_counts}
        if name == "hospital_c.csv":
            nc["test"] = str(shutil.copy(EXAMPLE / "hospital_c_test.csv", machine / "test.csv"))
        out.append(nc)
    return out


@pytest.mark.parametrize("secagg", [False, True], ids=["plain", "secagg"])
def test_sites_read_their_own_files_as_in_simulation(tmp_path: Path, secagg: bool) -> None:
    cfg = _config(tmp_path, secagg)
    srv = DeployServer(load_config(cfg), tmp_path / "run", stage_timeout_s=5.0)
    # a plain sum is FedAvg's example-weighted mean: the same as in simulation only if the
    # sites opt in to sending their counts (under SecAgg+ the mean is unweighted)
    rec = srv.run(FakeGrid(_sites(tmp_path, cfg, share_counts=not secagg)))
    sim = build_federation(load_config(cfg)).run()
    np.testing.assert_allclose(srv.params.numpy(), sim.params.numpy(), rtol=0, atol=1e-6)
    assert rec["evaluation"].startswith("at the sites") and rec["site_metrics"] == {}
    assert len(rec["example_counts_shared"]) == (0 if secagg else 3)


def test_sites_that_opt_in_evaluate_the_final_model_on_their_own_test_data(
    tmp_path: Path,
) -> None:
    # the coordinator has no data: hospitals A and C share their test metrics, B declines
    import copy

    from veil.federation.build import load_site_files
    from veil.models.metrics import evaluate_sites
    from veil.models.params import load_flat_params

    cfg = _config(tmp_path, secagg=True)
    sites = _sites(tmp_path, cfg)
    sites[0]["share-evaluation"] = sites[2]["share-evaluation"] = True
    grid = FakeGrid(sites)
    rec = DeployServer(load_config(cfg), tmp_path / "run", stage_timeout_s=5.0).run(grid)
    assert sorted(rec["site_metrics"]) == ["0", "2"]
    assert rec["site_metrics_summary"]["accuracy"]["n_sites"] == 2
    assert "2 shared their metrics, 1 declined" in rec["evaluation"]
    # site B sent no statistic: its only evaluation reply is a refusal with no numbers
    assert any(kind == "declined" and b'"metrics"' not in meta.encode()
               for node, kind, _, meta in grid.seen if node == 1001)
    # the same numbers as the simulation's per-site evaluation of its final model
    run = build_federation(load_config(cfg))
    res = run.run()
    final = copy.deepcopy(run.model)
    load_flat_params(final, res.params)
    fd = load_site_files(load_config(cfg))
    sim = evaluate_sites(final, fd)
    for party, name in (("0", fd.sites[0].name), ("2", fd.sites[2].name)):
        got, want = rec["site_metrics"][party], sim[name].to_dict()
        assert got["n"] == want["n"]
        assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)


def test_a_site_without_its_file_or_test_file_refuses(tmp_path: Path) -> None:
    cfg = _config(tmp_path, secagg=False)
    sites = _sites(tmp_path, cfg)
    del sites[0]["data"]
    del sites[2]["test"]  # its data.files entry has a separate test file
    grid = FakeGrid(sites)
    srv = DeployServer(load_config(cfg), tmp_path / "run", stage_timeout_s=5.0, min_nodes=1)
    srv.connect(grid)
    refusals = " ".join(srv.site_errors.values())
    assert "data = '/path/to/site.csv'" in refusals and "test = " in refusals
    assert len(srv.site_errors) == 2
    with pytest.raises(ConfigError, match="needs config"):
        from veil.deploy.site import SiteRuntime

        SiteRuntime({"partition-id": 0})
