"""A record or audit.json with wrong types is a typed error naming the section, not a traceback."""

from __future__ import annotations

import json

import pytest

from veil.audit import audit_run
from veil.cli.main import main
from veil.errors import DataError
from veil.report import render_report


@pytest.mark.parametrize("record, named", [
    ([1, 2], "must hold a JSON object"),
    ({"name": "x", "config": [1]}, "'config' must be a JSON object"),
    ({"name": "x", "rounds": "abc"}, "'rounds' must be a JSON array"),
    ({"name": "x", "rounds": [{"round": 0}, "a"]}, r"rounds\[1\] must be a JSON object"),
    ({"name": "x", "final": 3}, "'final' must be a JSON object"),
])
def test_wrong_types_are_named(tmp_path, capsys, record, named) -> None:
    (tmp_path / "record.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=named):
        render_report(tmp_path)
    with pytest.raises(DataError, match=named):
        audit_run(tmp_path, lira_refs=0, inversion=False)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "DataError" in err and "Traceback" not in err


def test_audit_json_of_wrong_types_is_named(tmp_path) -> None:
    (tmp_path / "record.json").write_text(json.dumps({"name": "x"}))
    (tmp_path / "audit.json").write_text(json.dumps({"membership": [1]}))
    with pytest.raises(DataError, match="'membership' must be a JSON object"):
        render_report(tmp_path)
