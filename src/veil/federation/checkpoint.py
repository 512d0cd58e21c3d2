"""Checkpoints: the state after the last completed round, written atomically.

A checkpoint is a local file written by this machine for itself (it is unpickled on
resume: never resume from a checkpoint you did not write).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from veil.errors import ConfigError

if TYPE_CHECKING:
    from veil.federation.runtime import Federation

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT"]

CHECKPOINT = "checkpoint.pt"
_FORMAT = 1


def save_checkpoint(fed: Federation, run_dir: Path) -> Path:
    """Write the run state after the last completed round (temp file + atomic rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {
        "format": _FORMAT,
        "next_round": fed.next_round,
        "params": fed.params,
        "pipeline_state": fed.pipe_state,
        "server_opt": fed.server_opt.state_dict(),
        "hooks": {h.name: h.state_dict() for h in fed.hooks},
        "records": fed.records,
        "stopped_reason": fed.stopped_reason,
        "n_params": int(fed.params.numel()),
        "n_sites": fed.n_sites,
        "seed": fed.seed,
        "fingerprint": fed.fingerprint,
    }
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(fed: Federation, run_dir: Path) -> None:
    """Restore ``fed`` from ``run_dir``'s checkpoint.

    Raises:
        ConfigError: no checkpoint, unreadable, or it belongs to a different run shape.
    """
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"nothing to resume: no checkpoint at {path}; start without --resume")
    try:
        state = torch.load(path, weights_only=False)
    except Exception as e:  # corrupt or truncated file
        raise ConfigError(
            f"checkpoint {path} is unreadable ({type(e).__name__}); start afresh"
        ) from None
    if state.get("format") != _FORMAT:
        raise ConfigError(f"checkpoint {path} has an unknown format")
    if (
        state["n_params"] != fed.params.numel()
        or state["n_sites"] != fed.n_sites
        or state["seed"] != fed.seed
    ):
        raise ConfigError(
            f"checkpoint {path} was written by a run with a different model, sites or seed; "
            "use the same config to resume, or a new run name"
        )
    if fed.fingerprint and state.get("fingerprint") and state["fingerprint"] != fed.fingerprint:
        raise ConfigError(
            f"the config changed since {run_dir} was started (only `rounds` may change on "
            "resume); restore the original config or start a new run name"
        )
    fed.next_round = int(state["next_round"])
    fed.params = state["params"]
    fed.pipe_state = state["pipeline_state"]
    fed.server_opt.load_state_dict(state["server_opt"])
    fed.records = list(state["records"])
    fed.stopped_reason = state.get("stopped_reason")
    for h in fed.hooks:
        if h.name in state["hooks"]:
            h.load_state_dict(state["hooks"][h.name])
