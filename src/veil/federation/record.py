"""Run records: ``record.json`` (config, versions, seeds, per-round metrics) and model files.

The record is rewritten atomically after every round, so a crash leaves the record of every
completed round on disk. Any figure in a report can be reproduced from it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from veil._env import versions
from veil.errors import DataError

if TYPE_CHECKING:
    import torch

    from veil.data import Dataset
    from veil.federation.config import RunConfig

__all__ = ["versions", "write_json_atomic", "read_record", "check_record", "RunRecord", "RECORD",
           "MODEL"]

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
    from veil._fs import write_json_atomic as _strict

    _strict(path, obj, default=_default)  # strict JSON: NaN/inf -> null, never a NaN literal


def read_record(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Load ``record.json`` from a run directory.

    Raises:
        veil.errors.DataError: missing or unreadable record.
    """
    p = Path(run_dir) / RECORD
    if not p.is_file():
        raise DataError(f"no {RECORD} in {run_dir}: is it a veil run directory?")
    try:
        obj = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{p} is not valid JSON: {e}") from None
    check_record(obj, p)
    return obj


#: the type every top-level section of a record must have (when present and not null)
_SECTIONS: dict[str, type] = {
    "config": dict, "final": dict, "privacy": dict, "plan": dict, "seeds": dict,
    "versions": dict, "model": dict, "data": dict, "rounds": list, "pipeline": list,
}


def check_record(obj: Any, path: str | os.PathLike[str] = RECORD) -> None:
    """Refuse a record whose sections have the wrong types, naming the section.

    Raises:
        veil.errors.DataError: not a JSON object, a section of the wrong type, or a round
            that is not an object.
    """
    if not isinstance(obj, dict):
        raise DataError(f"{path} must hold a JSON object (a veil run record), "
                        f"not a {type(obj).__name__}")
    for key, want in _SECTIONS.items():
        v = obj.get(key)
        if v is not None and not isinstance(v, want):
            raise DataError(f"{path}: '{key}' must be a JSON "
                            f"{'object' if want is dict else 'array'}, got "
                            f"{type(v).__name__} {json.dumps(v)[:60]}; is the record edited?")
    for i, r in enumerate(obj.get("rounds") or []):
        if not isinstance(r, dict):
            raise DataError(f"{path}: rounds[{i}] must be a JSON object, got {json.dumps(r)[:60]}")


class RunRecord:
    """The one reader of a run directory (audit, report and resume all use it).

    Args:
        run_dir: the run directory.
        record: its parsed ``record.json`` (read from ``run_dir`` when omitted).

    Raises:
        DataError: missing or unreadable record.
    """

    def __init__(self, run_dir: str | os.PathLike[str], record: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        if record is not None:
            check_record(record, self.run_dir / RECORD)
        self.data: dict[str, Any] = record if record is not None else read_record(run_dir)

    @property
    def config(self) -> RunConfig:
        """The run's config, validated as ``veil train`` validated it.

        Raises:
            DataError: the recorded config is not a valid run config.
        """
        from veil.errors import ConfigError
        from veil.federation.config import parse_config

        raw = dict(self.data.get("config") or {})
        if "seed" not in raw and "seed" in (self.data.get("seeds") or {}):
            raw["seed"] = self.data["seeds"]["seed"]
        try:
            return parse_config(raw)
        except ConfigError as e:
            raise DataError(f"{self.run_dir / RECORD}: recorded config is invalid: {e}") from None

    @property
    def rounds(self) -> list[dict[str, Any]]:
        """Per-round records (completed rounds)."""
        return list(self.data.get("rounds") or [])

    def flagged_sites(self) -> dict[int, list[int]]:
        """Round → ids of the sites the anomaly screen flagged (``aggregation.anomaly``);
        rounds that flagged nobody, or whose membership is hidden, are left out."""
        return {int(r["round"]): [int(s) for s in r["flagged"]]
                for r in self.rounds if r.get("flagged")}

    def dataset(self) -> Dataset:
        """The run's data set, split as the run split it (config ``data`` and ``seed``)."""
        from veil.federation.build import load_data

        return load_data(self.config)

    def model(self, ds: Dataset) -> torch.nn.Module:
        """The run's model with its final parameters from ``model.pt`` (``weights_only``).

        Raises:
            DataError: the model file is missing or does not fit the architecture.
        """
        import torch

        from veil.models import build_model
        from veil.models.params import load_flat_params

        mc = self.config.model
        model = build_model(mc.name, ds.input_shape, ds.n_classes, tuple(mc.hidden))
        p = self.run_dir / self.data.get("model_path", MODEL)
        if not p.is_file():
            raise DataError(f"model file {p} is missing")
        obj = torch.load(p, map_location="cpu", weights_only=True)
        params = obj.get("params", obj) if isinstance(obj, dict) else obj
        try:
            if isinstance(params, torch.Tensor):
                load_flat_params(model, params.reshape(-1).to(torch.float32))
            else:
                model.load_state_dict(params)
        except (RuntimeError, ValueError, KeyError) as e:
            raise DataError(f"{p} does not fit the configured model: {e}") from None
        return model.eval()

    def claimed_epsilon(self) -> tuple[float | None, float]:
        """(claimed ε or None, δ) from the privacy summary or the last round that has one."""
        pv = self.data.get("privacy") or {}
        cfg_priv = (self.data.get("config") or {}).get("privacy") or {}
        delta = float(
            pv.get("privacy_delta", pv.get("delta", cfg_priv.get("delta", 1e-5))) or 1e-5
        )
        eps = pv.get("epsilon_spent", pv.get("epsilon"))
        if isinstance(eps, dict):  # e.g. {"client": .., "sample": ..}
            vals = [v for v in eps.values() if isinstance(v, (int, float))]
            eps = max(vals) if vals else None
        if eps is None:
            for r in reversed(self.rounds):
                vals = [r.get(k) for k in ("epsilon_client", "epsilon_sample_max")]
                vals = [v for v in vals if isinstance(v, (int, float))]
                if vals:
                    eps = max(vals)
                    break
        if eps is None or not np.isfinite(float(eps)):
            return None, delta
        return float(eps), delta
