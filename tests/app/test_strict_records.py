"""Records and benchmark JSON are strict JSON: a NaN/inf value is written as null."""

from __future__ import annotations

import json
import math
import sys
import types

from veil.cli.main import main
from veil.federation.record import write_json_atomic


def _strict_load(text: str):
    def refuse(c: str):
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(text, parse_constant=refuse)


def test_record_writer_never_writes_nan(tmp_path) -> None:
    p = tmp_path / "record.json"
    write_json_atomic(p, {"loss": math.nan, "acc": [1.0, math.inf], "ok": 0.5})
    assert _strict_load(p.read_text()) == {"loss": None, "acc": [1.0, None], "ok": 0.5}


def test_bench_json_never_writes_nan(tmp_path, monkeypatch) -> None:
    from veil import bench

    mod = types.ModuleType("veil_fake_bench")
    mod.run = lambda quick=False: {"median_s": math.nan, "targets_met": {"speed": False}}
    monkeypatch.setitem(sys.modules, "veil_fake_bench", mod)
    monkeypatch.setitem(bench.BENCHMARKS, "fake", "veil_fake_bench:run")
    out = tmp_path / "b.json"
    assert main(["bench", "fake", "--json", str(out)]) == 0
    assert _strict_load(out.read_text()) == {"median_s": None, "targets_met": {"speed": False}}
