"""Run records: ``record.json`` (config, versions, seeds, per-round metrics) and model files.

The record is rewritten atomically after every round, so a crash leaves the record of every
completed round on disk. Any figure in a report can be reproduced from it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from veil._env import versions

__all__ = ["versions", "write_json_atomic", "read_record", "RECORD", "MODEL"]

RECORD = "record.json"
MODEL = "model.pt"

def now_iso() -> str:
    """Current UTC time, ISO 8601."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temp file and an atomic rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_default, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_record(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Load ``record.json`` from a run directory.

    Raises:
        veil.errors.DataError: missing or unreadable record.
    """
    from veil.errors import DataError

    p = Path(run_dir) / RECORD
    if not p.is_file():
        raise DataError(f"no {RECORD} in {run_dir}: is it a veil run directory?")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{p} is not valid JSON: {e}") from None
