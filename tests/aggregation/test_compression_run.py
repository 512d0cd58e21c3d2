"""aggregation.compression in a run: the pipeline it builds, its refusals, the bytes in the
round records, and error feedback that survives a resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from veil.aggregation import QSGD, PayloadSum, PlainSum, RandK, SecAggSum
from veil.app import parse_config
from veil.errors import ConfigError
from veil.federation.build import build_federation, build_pipeline


def _cfg(tmp_path, **agg):
    return parse_config({
        "name": "c", "seed": 5, "rounds": 3, "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "sites": 6, "partition": "iid"},
        "model": {"name": "logreg"},
        "local": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "federation": {"cohort_size": 4},
        "aggregation": agg,
    })


def test_config_builds_each_scheme_where_it_composes(tmp_path) -> None:
    p = build_pipeline(_cfg(tmp_path, compression="topk", compression_ratio=0.05), dim=650)
    assert p.describe() == ["weighted_mean", "topk", "payload_sum"]
    assert isinstance(p.summation, PayloadSum) and p.transforms[-1].passthrough == 1
    p = build_pipeline(_cfg(tmp_path, compression="randk", summation="secagg"), dim=650)
    assert p.describe() == ["randk", "uniform_mean", "quantize", "secagg"]
    assert isinstance(p.transforms[0], RandK) and p.transforms[0].k == 65
    p = build_pipeline(_cfg(tmp_path, compression="qsgd", compression_bits=2,
                            summation="secagg", quantize_range=0.1), dim=650)
    q = p.transforms[-1]
    assert isinstance(q, QSGD) and q.scale == 0.1 and q.cohort_bound == 4
    assert isinstance(p.summation, SecAggSum) and p.summation.bits == q.ring_bits == 4  # 4·3
    p = build_pipeline(_cfg(tmp_path, compression="qsgd"), dim=650)
    assert isinstance(p.summation, PayloadSum) and p.transforms[-1].scale is None
    p = build_pipeline(_cfg(tmp_path, compression="randk+qsgd", summation="secagg"), dim=650)
    assert p.describe() == ["randk", "uniform_mean", "qsgd", "secagg"]
    p = build_pipeline(_cfg(tmp_path, compression="randk+qsgd"), dim=650)
    assert p.describe() == ["randk", "weighted_mean", "qsgd", "payload_sum"]
    assert p.transforms[-1].passthrough == 1
    assert isinstance(build_pipeline(_cfg(tmp_path), dim=650).summation, PlainSum)


def test_config_refuses_what_does_not_compose(tmp_path) -> None:
    with pytest.raises(ConfigError, match="'secagg' cannot follow stage 'topk'.*'randk'"):
        build_pipeline(_cfg(tmp_path, compression="topk", summation="secagg"), dim=650)
    with pytest.raises(ConfigError, match="compression_bits"):
        _cfg(tmp_path, compression="qsgd", compression_bits=9)
    dp = {"enabled": True, "target_epsilon": 8.0, "accountant": "rdp",
          "client_level": {"enabled": True, "clip_norm": 0.5, "noise_multiplier": 1.0}}
    for scheme in ("topk", "qsgd"):
        raw = _cfg(tmp_path, compression=scheme).model_dump(exclude_unset=True)
        cfg = parse_config({**raw, "privacy": dp})
        with pytest.raises(ConfigError, match=f"'{scheme}' does not compose with client-level"):
            build_federation(cfg)
    # random-k does compose: first, without feedback, so the DP clip bounds what is sent
    raw = _cfg(tmp_path, compression="randk").model_dump(exclude_unset=True)
    sim = build_federation(parse_config({**raw, "privacy": dp}))
    first = sim.pipeline.transforms[0]
    assert isinstance(first, RandK) and not first.error_feedback


def test_bytes_per_site_recorded_every_round(tmp_path) -> None:
    sim = build_federation(_cfg(tmp_path, compression="topk", compression_ratio=0.02))
    res = sim.run()
    d = sim.params.numel()
    k = math.ceil(0.02 * d)
    for rec in res.rounds:
        assert rec["bytes_per_site_mean"] == k * (2 + 4) + 4 + 16  # idx u16, f32, weight
        assert rec["bytes_total"] == len(rec["survivors"]) * rec["bytes_per_site_mean"]
        ratio = rec["measurements"]["payload_sum/float32_ratio"]
        assert ratio == pytest.approx(((d + 1) * 4 + 16) / rec["bytes_per_site_mean"])
    q = build_federation(_cfg(tmp_path / "q", compression="qsgd", compression_bits=2)).run()
    assert q.rounds[0]["bytes_per_site_mean"] == 4 + math.ceil(d * 2 / 8) + 4 + 16


def test_resume_keeps_the_residual(tmp_path) -> None:
    """A run stopped after 2 rounds and resumed equals the uninterrupted run: the same
    model and, at every site, the same error-feedback residual."""
    def cfg(rounds: int, out: str):
        c = _cfg(tmp_path / out, compression="topk", compression_ratio=0.05)
        return c.model_copy(update={"rounds": rounds})

    full = build_federation(cfg(4, "a"))
    full.run()
    part = build_federation(cfg(2, "b"))
    part.run()
    assert any(s.stage_state[-1] is not None for s in part.sites)  # residuals kept
    resumed = build_federation(cfg(4, "b"))
    resumed.run(resume=True)
    assert torch.equal(resumed.params, full.params)
    for a, b in zip(full.sites, resumed.sites):
        ra, rb = a.stage_state[-1], b.stage_state[-1]
        assert (ra is None) == (rb is None)
        if ra is not None:
            np.testing.assert_array_equal(ra, rb)


def test_record_cli_table_and_report_show_the_compressed_bytes(tmp_path) -> None:
    import json

    from rich.console import Console

    from veil.app import train
    from veil.cli.progress import fmt_bytes, summary_table
    from veil.report.html import build_html

    cfg = _cfg(tmp_path, compression="qsgd", compression_bits=2).model_copy(
        update={"rounds": 2})
    out = train(cfg)
    rec = json.loads((out.run_dir / "record.json").read_text())
    d = rec["plan"]["n_parameters"]
    want = 4 + math.ceil(d * 2 / 8) + 4 + 16
    assert [r["bytes_per_site_mean"] for r in rec["rounds"]] == [want, want]
    con = Console(width=120, record=True)
    con.print(summary_table("rounds", rec["rounds"]))
    assert fmt_bytes(want) in con.export_text()
    html = build_html(rec)
    assert "qsgd" in html and f"{want / 1024:.1f} KiB" in html


def test_deployment_refuses_compression(tmp_path) -> None:
    from veil.deploy.parts import check_deployable

    raw = _cfg(tmp_path, compression="randk").model_dump(exclude_unset=True)
    raw["federation"] = {**raw["federation"], "transport": "flower"}
    with pytest.raises(ConfigError, match="simulation only"):
        check_deployable(parse_config(raw))
