"""Build and run a federated job from a :class:`RunConfig` (what the CLI and demo call).

Example:
    >>> from veil.federation import RunConfig, train
    >>> cfg = RunConfig(name="quick", rounds=3)
    >>> result = train(cfg, progress=False)        # doctest: +SKIP
    >>> result.final_accuracy                      # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from veil.aggregation import Clip, Pipeline, PlainSum, Transform, UniformMean, WeightedMean
from veil.data import Dataset, load_dataset, partition
from veil.errors import ConfigError
from veil.federation.config import RunConfig, config_hash
from veil.federation.hooks import RunHook
from veil.federation.local import LocalConfig, VectorisedTrainer
from veil.federation.record import MODEL, RECORD, now_iso, versions, write_json_atomic
from veil.federation.runtime import Federation, RunResult, make_plan
from veil.federation.server_opt import make_server_optimizer
from veil.models import build_model, n_parameters

__all__ = ["build_federation", "train", "load_data", "threat_model", "TrainOutput", "privacy_sweep"]


def load_data(cfg: RunConfig) -> Dataset:
    """Load the configured data set (seeded split)."""
    d = cfg.data
    kwargs: dict[str, Any] = {}
    if d.dataset in ("digits", "breast_cancer", "diabetes"):
        kwargs = {"test_fraction": d.test_fraction, "seed": cfg.seed}
        if d.dataset == "digits":
            kwargs["image"] = d.image
    elif d.dataset == "fashion_mnist":
        kwargs = {"path": d.path, "flat": not d.image}
    elif d.dataset == "csv":
        kwargs = {
            "path": d.path,
            "label": d.label,
            "task": d.task,
            "test_fraction": d.test_fraction,
            "seed": cfg.seed,
        }
    ds = load_dataset(d.dataset, **kwargs)
    if d.limit is not None and d.limit < len(ds.y_train):
        ds = Dataset(
            ds.name,
            ds.x_train[: d.limit],
            ds.y_train[: d.limit],
            ds.x_test,
            ds.y_test,
            ds.task,
            ds.n_classes,
        )
    return ds


def threat_model(cfg: RunConfig) -> str:
    """Plain-language statement of what this run protects against (for records and reports)."""
    parts = [
        "Sites keep their raw data; only model updates leave a site. The server is "
        "honest-but-curious (follows the protocol, tries to learn from what it sees)."
    ]
    if cfg.aggregation.secure_aggregation:
        parts.append(
            "Secure aggregation (SecAgg+): the server learns only the sum of the surviving "
            "sites' quantised updates, not any single site's update, as long as fewer than "
            "the threshold of a site's neighbours collude with it."
        )
    else:
        parts.append("No secure aggregation: the server sees each site's update in the clear.")
    if cfg.privacy.enabled:
        parts.append(
            "Differential privacy bounds what the released model (and the updates it is built "
            "from) reveals about any one example or site; see the ε figures."
        )
    else:
        parts.append(
            "No differential privacy: the final model and the updates may reveal information "
            "about individual training examples (see the audit for how much)."
        )
    return " ".join(parts)


@dataclass
class TrainOutput:
    """A finished (or stopped) run and where its files are."""

    result: RunResult
    run_dir: Path
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float | None:
        """Last evaluated test accuracy (R² for regression)."""
        return self.result.final_accuracy


def build_federation(
    cfg: RunConfig,
    hooks: Sequence[RunHook] = (),
    dataset: Dataset | None = None,
    model: torch.nn.Module | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> Federation:
    """Everything a run needs, from a validated config.

    Args:
        cfg: the run config.
        hooks: extra hooks (audits); the privacy ledger is added from ``cfg.privacy``.
        dataset: use this data instead of ``cfg.data`` (it is still split per ``cfg.data``).
        model: use this model instead of ``cfg.model``.
        on_round: per-round callback (progress).
    """
    ds = dataset if dataset is not None else load_data(cfg)
    if model is None:
        model = build_model(
            cfg.model.name, ds.input_shape, ds.n_classes, cfg.model.hidden, seed=cfg.seed
        )
    parts = partition(
        ds.y_train if ds.task == "classification" else np.zeros(len(ds.y_train), dtype=np.int64),
        cfg.data.sites,
        cfg.data.partition
        if ds.task == "classification" or cfg.data.partition != "dirichlet"
        else "iid",
        cfg.data.alpha,
        seed=cfg.seed,
    )
    lc = cfg.local
    local = LocalConfig(lc.epochs, lc.batch_size, lc.lr, lc.momentum, lc.weight_decay)
    trainer: VectorisedTrainer = VectorisedTrainer(model, ds.task, local)
    transforms: list[Transform[Any]] = []
    all_hooks: list[RunHook] = list(hooks)
    secure_rng = True
    dp_transforms: list[Transform[Any]] = []
    noise: dict[str, Any] = {}
    post_quantize: list[Transform[Any]] = []
    quant = None
    if cfg.privacy.enabled:
        from veil.privacy import build_privacy  # type: ignore[attr-defined]

        plan = make_plan(
            np.asarray([len(p) for p in parts]), cfg.rounds, cfg.cohort,
            cfg.federation.sampling, local,
        )
        quant = _secure_sum(cfg)[1] if cfg.aggregation.secure_aggregation else None
        setup = build_privacy(
            cfg.privacy, plan, model, ds.task, local, cfg.seed,
            quantizer=quant, expected_dropout=cfg.aggregation.expected_dropout,
        )
        if setup.trainer is not None:
            trainer = setup.trainer
        dp_transforms = list(setup.transforms)
        post_quantize = list(setup.post_quantize)
        if setup.quantizer is not None:
            quant = setup.quantizer
        noise = dict(setup.noise)
        all_hooks = list(setup.hooks) + all_hooks
        secure_rng = bool(getattr(cfg.privacy, "secure_rng", True))
    if cfg.aggregation.clip_norm is not None and not dp_transforms:
        transforms.append(Clip(cfg.aggregation.clip_norm))
    if dp_transforms:
        transforms.extend(dp_transforms)
    elif cfg.aggregation.secure_aggregation or cfg.privacy.enabled:
        # Unweighted: with SecAgg a data-dependent weight column would need its own range;
        # with DP, weighting by a site's example count would make the aggregate depend on
        # private data outside the DP mechanism (add/remove-one changes the count).
        transforms.append(UniformMean())
    else:
        transforms.append(WeightedMean())
    summation: Any = PlainSum()
    if cfg.aggregation.secure_aggregation:
        summation, quant_stage = _secure_sum(cfg)
        transforms.append(quant if quant is not None else quant_stage)
        transforms.extend(post_quantize)
    pipeline = Pipeline(transforms, summation)
    fed = Federation(
        model,
        ds,
        parts,
        pipeline,
        trainer,
        make_server_optimizer(
            cfg.federation.server_optimizer,
            cfg.federation.server_lr,
            cfg.federation.server_momentum,
        ),
        rounds=cfg.rounds,
        seed=cfg.seed,
        cohort=cfg.cohort,
        sampling=cfg.federation.sampling,
        dropout_rate=cfg.federation.dropout_rate,
        deadline_s=cfg.federation.deadline_s
        if cfg.federation.deadline_s is not None
        else float("inf"),
        latency_s=cfg.federation.latency_s,
        latency_spread=cfg.federation.latency_spread,
        hooks=all_hooks,
        run_dir=cfg.run_dir(),
        secure_rng=secure_rng,
        eval_every=cfg.federation.eval_every,
        on_round=on_round,
    )
    fed.fingerprint = config_hash(cfg)
    fed.privacy_noise = noise
    return fed


def _secure_sum(cfg: RunConfig) -> tuple[Any, Transform[Any]]:
    from veil.aggregation.quantize import Quantize
    from veil.aggregation.secagg import SecAggSum

    a = cfg.aggregation
    quant = Quantize(clip=a.quantize_range, bits=a.bits)
    summation = SecAggSum(
        bits=a.bits,
        k=a.neighbours,
        dropout=a.expected_dropout,
        corrupt=a.corrupt_fraction,
        stage_deadline_s=a.stage_deadline_s,
    )
    return summation, quant


def train(
    cfg: RunConfig,
    resume: bool = False,
    hooks: Sequence[RunHook] = (),
    dataset: Dataset | None = None,
    model: torch.nn.Module | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> TrainOutput:
    """Run a federated job end to end and write ``record.json`` and ``model.pt``.

    Args:
        cfg: validated config.
        resume: continue from the run directory's checkpoint.
        hooks: extra hooks.
        dataset, model: override the configured ones.
        on_round: per-round callback.

    Raises:
        ConfigError: bad config, or resume without a matching checkpoint.
        BudgetExceededError: the privacy ledger refused the plan.
    """
    run_dir = cfg.run_dir()
    for d in (Path(cfg.output_dir), run_dir):
        if d.exists() and not d.is_dir():
            raise ConfigError(f"{d} exists and is not a directory", key="output_dir")
    if not resume and (run_dir / "checkpoint.pt").exists():
        raise ConfigError(
            f"{run_dir} already holds a run; use --resume to continue it, or a new name",
            key="name",
        )
    started = now_iso()
    t0 = time.perf_counter()
    record: dict[str, Any] = {}

    def _on_round(rec: dict[str, Any]) -> None:
        record["rounds"] = fed.records
        record["final"] = _final(fed, time.perf_counter() - t0)
        write_json_atomic(run_dir / RECORD, record)
        if on_round is not None:
            on_round(rec)

    ds = dataset if dataset is not None else load_data(cfg)
    canaries = None
    if cfg.audit.canaries:
        from veil.audit.canary import insert_canaries

        if ds.task != "classification":
            raise ConfigError("canary audits need a classification data set", key="audit.canaries")
        x, y, canaries = insert_canaries(
            ds.x_train, ds.y_train, cfg.audit.canaries, cfg.seed, ds.n_classes
        )
        ds = Dataset(ds.name, x, y, ds.x_test, ds.y_test, ds.task, ds.n_classes)
    fed = build_federation(cfg, hooks, ds, model, _on_round)
    record.update(
        {
            "veil_version": versions()["veil"],
            "name": cfg.name,
            "created": started,
            "config": cfg.model_dump(mode="json"),
            "versions": versions(),
            "seeds": {"seed": cfg.seed, "secure_rng": fed.secure_rng},
            "threat_model": threat_model(cfg),
            "pipeline": fed.pipeline.describe(),
            "plan": {
                "rounds": cfg.rounds,
                "n_sites": fed.n_sites,
                "cohort_size": fed.cohort,
                "sampling": fed.sampling,
                "site_sizes": fed.data.sizes.tolist(),
                "n_parameters": n_parameters(fed.model),
                "dataset": fed.dataset.name,
            },
            "model_path": MODEL,
        }
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        result = _run_with_canaries(fed, run_dir, canaries, resume)
    finally:
        torch.set_num_threads(threads_before)
    record["rounds"] = result.rounds
    record["final"] = _final(fed, time.perf_counter() - t0)
    record["privacy"] = {k: v for k, v in result.summary.items()}
    if fed.privacy_noise:
        record["privacy"]["noise"] = {
            k: ({str(kk): vv for kk, vv in v.items()} if isinstance(v, dict) else v)
            for k, v in fed.privacy_noise.items()
        }
    torch.save({"params": result.params, "config": record["config"]}, run_dir / MODEL)
    write_json_atomic(run_dir / RECORD, record)
    if cfg.audit.log:
        from veil.audit.log import AuditLog, run_entry

        AuditLog(Path(cfg.output_dir) / "audit.log").append("run", run_entry(record))
    return TrainOutput(result, run_dir, record)


def _run_with_canaries(fed: Federation, run_dir: Path, canaries: Any, resume: bool) -> RunResult:
    if canaries is not None:
        from veil.audit.canary import save_canaries

        save_canaries(run_dir / "canaries.npz", canaries)
    return fed.run(resume=resume)


def _final(fed: Federation, wall_s: float) -> dict[str, Any]:
    acc = loss = None
    for r in reversed(fed.records):
        if r.get("test_accuracy") is not None:
            acc, loss = r["test_accuracy"], r["test_loss"]
            break
    return {
        "test_accuracy": acc,
        "test_loss": loss,
        "rounds_completed": fed.next_round,
        "stopped_reason": fed.stopped_reason,
        "wall_s": wall_s,
    }


def privacy_sweep(
    cfg: RunConfig,
    epsilons: Sequence[float],
    out_dir: str | Path | None = None,
    on_run: Callable[[float, TrainOutput], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``cfg`` once per target ε and write the privacy–utility table and curve.

    ``inf`` trains without DP. Each run lives in ``<output_dir>/<name>-eps<ε>``; the
    table (CSV, Markdown, JSON) and ``sweep.png`` go to ``out_dir``
    (default ``<output_dir>/<name>-sweep``).

    Raises:
        ConfigError: the config has no ``[privacy]`` level enabled to sweep over.
    """
    import math

    from veil.privacy.sweep import sweep

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
            import shutil

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

    return sweep(run_one, epsilons, out, title=f"{cfg.name}: accuracy vs ε (δ={p.delta:g})")
