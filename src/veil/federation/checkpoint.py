"""Checkpoints: each part's ``state_dict`` after the last completed round, written atomically.

The file holds only tensors, strings and numbers (``torch.load(..., weights_only=True)``
reads it back: no pickled objects, so a crafted checkpoint cannot run code). Structured
state is packed by :func:`pack` into JSON plus a table of tensors and unpacked against a
template of the same shape (the freshly built part's own initial state), so restoring
never writes another object's attributes: each part loads its own ``state_dict``.

Each site's state (its stage state and its own sample-level ledger, whose ε says how often
the site took part) is a file of that site, ``RUN/sites/<id>/state-<next_round>.pt``, not
part of the server's ``checkpoint.pt``: under client-level DP with hidden cohorts the
server-side checkpoint must not reveal who took part. Every site's file is rewritten every
round (whether it took part or not), before the server's checkpoint; the server's
checkpoint names the round, so a crash between the two resumes from the site files of the
round the checkpoint names (older files are removed only after it is written). Only
``checkpoint.pt`` is fsynced (the sites' files are atomic renames without it: after a
power loss a site's file may be missing, and resume then says so).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from veil.errors import ConfigError

__all__ = ["save_checkpoint", "load_checkpoint", "pack", "unpack", "site_state_path",
           "CHECKPOINT", "SITES"]

#: the fix a corrupt or foreign checkpoint names
AFRESH = ("start afresh with `veil train --restart CONFIG` (the earlier files are kept in "
          "RUN/previous-N/)")

CHECKPOINT = "checkpoint.pt"
#: the folder of the sites' own state files inside a run directory
SITES = "sites"
_FORMAT = 3
_FORMATS = (2, 3)  # 2: the sites' states inside checkpoint.pt (still read)


def pack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able image of ``obj``; arrays and tensors go into ``tensors`` by key."""
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        key = str(len(tensors))
        is_np = isinstance(obj, np.ndarray)
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj)) if is_np else obj.detach()
        return {"__tensor__": key, "numpy": is_np}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__dataclass__": {f.name: pack(getattr(obj, f.name), tensors)
                                  for f in dataclasses.fields(obj)}}
    if isinstance(obj, Mapping):
        return {"__map__": [[pack(k, tensors), pack(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [pack(v, tensors) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ConfigError(f"cannot checkpoint a {type(obj).__name__}: give it a state_dict")


def unpack(img: Any, tensors: Mapping[str, torch.Tensor], template: Any = None) -> Any:
    """Invert :func:`pack`; dataclasses are rebuilt from ``template`` (same type)."""
    if isinstance(img, list):
        return [unpack(v, tensors) for v in img]
    if not isinstance(img, dict):
        return img
    if "__tensor__" in img:
        t = tensors[img["__tensor__"]]
        return t.numpy() if img.get("numpy") else t
    if "__tuple__" in img:
        items = img["__tuple__"]
        tpl = template if isinstance(template, tuple) and len(template) == len(items) else None
        return tuple(unpack(v, tensors, tpl[i] if tpl else None) for i, v in enumerate(items))
    if "__map__" in img:
        out = {}
        for k, v in img["__map__"]:
            key = unpack(k, tensors)
            sub = template.get(key) if isinstance(template, Mapping) else None
            out[key] = unpack(v, tensors, sub)
        return out
    if "__dataclass__" in img:
        if not (dataclasses.is_dataclass(template) and not isinstance(template, type)):
            raise ConfigError("checkpoint state does not match this run's stages; " + AFRESH)
        fields = {k: unpack(v, tensors, getattr(template, k, None))
                  for k, v in img["__dataclass__"].items()}
        return dataclasses.replace(template, **fields)
    raise ConfigError("checkpoint holds an unknown state entry; " + AFRESH)


def site_state_path(run_dir: Path, site: int, next_round: int) -> Path:
    """Site ``site``'s own state file after ``next_round`` completed rounds."""
    return run_dir / SITES / str(int(site)) / f"state-{int(next_round)}.pt"


def _write(obj: Any, path: Path, sync: bool = True) -> None:
    """``obj`` packed into ``path`` (temp file + fsync if ``sync`` + atomic rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    doc = json.dumps(pack(obj, tensors), allow_nan=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": _FORMAT, "state": doc, "tensors": tensors}, tmp)
    if sync:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _read(path: Path, template: Any) -> Any:
    """Invert :func:`_write` (``weights_only``: tensors and JSON only)."""
    try:
        raw = torch.load(path, weights_only=True)
        img = json.loads(raw["state"])
    except Exception as e:  # corrupt, truncated, or not ours
        raise ConfigError(
            f"checkpoint {path} is unreadable ({type(e).__name__}); {AFRESH}"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") not in _FORMATS:
        raise ConfigError(f"checkpoint {path} has an unknown format; " + AFRESH)
    return unpack(img, raw["tensors"], template)


def save_checkpoint(state: Mapping[str, Any], run_dir: Path) -> Path:
    """Write a run's ``state_dict``: each site's state to its own file, then the rest.

    Returns:
        The server's checkpoint file.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    server = dict(state)
    sites = server.pop("sites", None)
    if sites is not None:
        nxt = int(server.get("next_round", 0))
        for i, st in enumerate(sites):  # no fsync each (100 sites: 0.7 s a round)
            _write(st, site_state_path(run_dir, i, nxt), sync=False)
        server["site_files"] = len(sites)  # the server knows how many sites, not their state
    path = run_dir / CHECKPOINT
    _write(server, path)
    if sites is not None and nxt > 0:
        for i in range(len(sites)):  # the previous round's site files, now superseded
            site_state_path(run_dir, i, nxt - 1).unlink(missing_ok=True)
    return path


def load_checkpoint(run_dir: Path, template: Any = None) -> dict[str, Any]:
    """Read a run's ``state_dict`` back (``weights_only``: tensors and JSON only).

    Args:
        run_dir: the run directory.
        template: the freshly built run's own ``state_dict`` (dataclass shapes).

    Raises:
        ConfigError: no checkpoint or a site's state file missing, unreadable, or of an
            unknown format.
    """
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"nothing to resume: no checkpoint at {path}; start without --resume")
    out = _read(path, template)
    if not isinstance(out, dict):
        raise ConfigError(f"checkpoint {path} has an unknown format; " + AFRESH)
    n = out.pop("site_files", None)
    if n is not None:
        tpl = template.get("sites") if isinstance(template, Mapping) else None
        nxt = int(out.get("next_round", 0))
        sites = []
        for i in range(int(n)):
            p = site_state_path(run_dir, i, nxt)
            if not p.is_file():
                raise ConfigError(f"site {i}'s state file {p} is missing; " + AFRESH)
            sites.append(_read(p, tpl[i] if isinstance(tpl, list) and i < len(tpl) else None))
        out["sites"] = sites
    return out
