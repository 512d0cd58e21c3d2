"""``veil sweep``: one run per target ε and the privacy–utility table and curve."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from veil.app.train import TrainOutput, train
from veil.errors import ConfigError
from veil.federation.config import RunConfig
from veil.privacy.sweep import sweep, write_sweep

__all__ = ["privacy_sweep", "sweep_location"]


def _tag(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:g}"


def _holds_files(d: Path) -> bool:
    return d.exists() and (not d.is_dir() or any(d.iterdir()))


def sweep_location(
    cfg: RunConfig, epsilons: Sequence[float], out_dir: str | Path | None = None
) -> tuple[Path, str]:
    """Where a new sweep goes, never over an earlier one: ``(table folder, run-name prefix)``.

    The first sweep of ``cfg.name`` writes ``<name>-sweep`` and runs ``<name>-eps<ε>``; when
    any of those exist, the next free number ``k`` gives ``<name>-k-sweep`` and
    ``<name>-k-eps<ε>``.

    Raises:
        ConfigError: ``out_dir`` was given and already holds files.
    """
    if out_dir is not None and _holds_files(Path(out_dir)):
        raise ConfigError(
            f"{out_dir} already holds files (an earlier sweep?); it is not overwritten: "
            "choose another --out, or leave --out unset for a new numbered folder",
            key="--out",
        )
    root = Path(cfg.output_dir)
    for k in itertools.count(1):
        prefix = cfg.name if k == 1 else f"{cfg.name}-{k}"
        out = Path(out_dir) if out_dir is not None else root / f"{prefix}-sweep"
        runs = [root / f"{prefix}-eps{_tag(e)}" for e in epsilons]
        if not _holds_files(out) and not any(r.exists() for r in runs):
            return out, prefix
    raise AssertionError("unreachable")  # pragma: no cover


def privacy_sweep(
    cfg: RunConfig,
    epsilons: Sequence[float],
    out_dir: str | Path | None = None,
    on_run: Callable[[float, TrainOutput], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``cfg`` once per target ε and write the privacy–utility table and curve.

    ``inf`` trains without DP. Each run lives in ``<output_dir>/<name>-eps<ε>``; the
    table (CSV, Markdown, JSON) and ``sweep.png`` go to ``out_dir``
    (default ``<output_dir>/<name>-sweep``). An earlier sweep is never overwritten: the
    next one is numbered (:func:`sweep_location`). Each row says whether it is on the
    privacy-utility ``frontier`` and, when the config has a ``[policy]``, whether it
    ``meets_policy`` (:func:`veil.audit.policy.mark_sweep`).

    Raises:
        ConfigError: the config has no ``[privacy]`` level enabled to sweep over, or
            ``out_dir`` already holds files.
    """
    p = cfg.privacy
    if not (p.sample_level.enabled or p.client_level.enabled):
        raise ConfigError(
            "a sweep needs privacy.sample_level or privacy.client_level enabled in the config",
            key="privacy",
        )
    out, prefix = sweep_location(cfg, epsilons, out_dir)

    def run_one(eps: float) -> dict[str, Any]:
        raw = cfg.model_dump(mode="json")
        raw["name"] = f"{prefix}-eps{_tag(eps)}"
        raw["privacy"]["enabled"] = not math.isinf(eps)
        if not math.isinf(eps):
            raw["privacy"]["target_epsilon"] = eps
            for level in ("sample_level", "client_level"):
                raw["privacy"][level]["noise_multiplier"] = None
        run_cfg = RunConfig.model_validate(raw)
        d = run_cfg.run_dir()
        res = train(run_cfg)  # a new folder (sweep_location): nothing earlier is deleted
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
