"""The ``[tuning]`` section of a run config (validated when the config is read).

``veil tune`` (:mod:`veil.app.tune`) runs the search; this module only says what a valid
section is, so that :func:`veil.federation.config.parse_config` can refuse a bad one at
once, before anything trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from veil.errors import ConfigError
from veil.privacy.tuning import TuningPlan

__all__ = ["TUNABLE", "TuningConfig", "parse_tuning"]

_KEY = "tuning"

#: Config keys a candidate may set: none of them changes a trial's DP events.
TUNABLE: frozenset[str] = frozenset(
    {
        "local.lr",
        "local.momentum",
        "local.weight_decay",
        "federation.server_optimizer",
        "federation.server_lr",
        "federation.server_momentum",
    }
)

class TuningConfig(BaseModel):
    """The ``[tuning]`` section.

    Attributes:
        candidates: config overrides to draw from (dotted keys from :data:`TUNABLE`).
        mean_runs: expected number of trials ``E[K]`` (the cost grows slowly with it).
        shape: ``η`` of the truncated negative binomial law of ``K`` (0: logarithmic).
        score_noise: std of the noise each site adds to its count of correct predictions
            (sample-level DP).
        client_score_noise: std of the noise on the sum of the sites' accuracies
            (client-level DP).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: list[dict[str, Any]] = Field(min_length=1)
    mean_runs: float = Field(2.0, ge=1.0, le=1000.0)
    shape: float = Field(0.0, ge=0.0, le=100.0)
    score_noise: float = Field(20.0, gt=0.0, allow_inf_nan=False)
    client_score_noise: float = Field(1.0, gt=0.0, allow_inf_nan=False)

    @property
    def plan(self) -> TuningPlan:
        """The law of ``K``."""
        return TuningPlan(self.mean_runs, self.shape)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"local": {"lr": 1}}`` and ``{"local.lr": 1}`` both become ``{"local.lr": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        for kk, vv in (_flatten(v, key + ".") if isinstance(v, Mapping) else {key: v}).items():
            if kk in out:
                raise ConfigError(f"a candidate sets {kk} twice", key=f"{_KEY}.candidates")
            out[kk] = vv
    return out


def parse_tuning(raw: Mapping[str, Any] | None) -> TuningConfig:
    """Validate a ``[tuning]`` table.

    Raises:
        ConfigError: no table, unknown keys, or a candidate that sets a key outside
            :data:`TUNABLE` (naming the candidate and the key).
    """
    if raw is None:
        raise ConfigError("the config has no [tuning] section (candidates to search)", key=_KEY)
    if not isinstance(raw, Mapping):
        raise ConfigError("[tuning] must be a table", key=_KEY)
    try:
        tc = TuningConfig.model_validate(dict(raw))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(str(first["msg"]), key=f"{_KEY}.{where}") from None
    flat = []
    for i, cand in enumerate(tc.candidates):
        f = _flatten(cand)
        if not f:
            raise ConfigError(f"candidate {i} sets nothing", key=f"{_KEY}.candidates[{i}]")
        bad = sorted(set(f) - TUNABLE)
        if bad:
            raise ConfigError(
                f"candidate {i} sets {', '.join(bad)}, which may change the DP "
                f"mechanism or the data; a candidate may set only {', '.join(sorted(TUNABLE))}",
                key=f"{_KEY}.candidates[{i}]",
            )
        flat.append(f)
    return tc.model_copy(update={"candidates": flat})
