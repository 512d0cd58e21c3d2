"""``veil sweep``: one run per target ε and the privacy–utility table and curve."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from veil.app.train import TrainOutput, train
from veil.errors import ConfigError
from veil.federation.config import RunConfig
from veil.privacy.sweep import sweep, write_sweep

__all__ = ["privacy_sweep"]


def privacy_sweep(
    cfg: RunConfig,
    epsilons: Sequence[float],
    out_dir: str | Path | None = None,
    on_run: Callable[[float, TrainOutput], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``cfg`` once per target ε and write the privacy–utility table and curve.

    ``inf`` trains without DP. Each run lives in ``<output_dir>/<name>-eps<ε>``; the
    table (CSV, Markdown, JSON) and ``sweep.png`` go to ``out_dir``
    (default ``<output_dir>/<name>-sweep``). Each row says whether it is on the
    privacy-utility ``frontier`` and, when the config has a ``[policy]``, whether it
    ``meets_policy`` (:func:`veil.audit.policy.mark_sweep`).

    Raises:
        ConfigError: the config has no ``[privacy]`` level enabled to sweep over.
    """
    p = cfg.privacy
    if not (p.sample_level.enabled or p.client_level.enabled):
        raise ConfigError(
            "a sweep needs privacy.sample_level or privacy.client_level enabled in the config",
            key="privacy",
        )
    out = Path(out_dir) if out_dir is not None else Path(cfg.output_dir) / f"{cfg.name}-sweep"

    def run_one(eps: float) -> dict[str, Any]:
        tag = "inf" if math.isinf(eps) else f"{eps:g}"
        raw = cfg.model_dump(mode="json")
        raw["name"] = f"{cfg.name}-eps{tag}"
        raw["privacy"]["enabled"] = not math.isinf(eps)
        if not math.isinf(eps):
            raw["privacy"]["target_epsilon"] = eps
            for level in ("sample_level", "client_level"):
                raw["privacy"][level]["noise_multiplier"] = None
        run_cfg = RunConfig.model_validate(raw)
        d = run_cfg.run_dir()
        if d.exists():
            shutil.rmtree(d)
        res = train(run_cfg)
        if on_run is not None:
            on_run(eps, res)
        spent = res.record.get("privacy", {})
        return {
            "accuracy": res.final_accuracy,
            "epsilon_spent": spent.get("epsilon_sample_max", spent.get("epsilon_client")),
            "rounds": res.result.rounds_completed,
            "run": str(d),
        }

    title = f"{cfg.name}: accuracy vs ε (δ={p.delta:g})"
    rows = sweep(run_one, epsilons, out, title=title)
    # Mark the privacy-utility frontier and, with a [policy], the runs that satisfy it.
    from veil.audit.policy import Policy, mark_sweep

    marked = mark_sweep(rows, Policy.from_dict(cfg.policy) if cfg.policy else None, p.delta)
    write_sweep(marked, out, title)
    return marked
