"""A whole run from a config: build, train, write ``record.json`` and ``model.pt``, log.

Example:
    >>> from veil.app import RunConfig, train
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

import torch

from veil.data import Dataset
from veil.errors import ConfigError
from veil.federation.build import build_federation, load_data, load_site_files
from veil.federation.config import RunConfig
from veil.federation.hooks import RunHook
from veil.federation.record import MODEL, RECORD, now_iso, versions
from veil.federation.simulation import RunResult, Simulation
from veil.models import n_parameters

__all__ = ["train", "threat_model", "TrainOutput", "round_outcomes", "INTERRUPTED",
           "TRIALS_DIR"]

#: left in a run directory by a ``veil tune`` search that stopped before it finished
INTERRUPTED = "search-interrupted.json"
#: where a ``veil tune`` search runs its trials, inside its run directory
TRIALS_DIR = "trials"


def threat_model(cfg: RunConfig) -> str:
    """Plain-language statement of what this run protects against (for records and reports)."""
    parts = [
        "Sites keep their raw data; only model updates leave a site. The server is "
        "honest-but-curious (follows the protocol, tries to learn from what it sees)."
    ]
    if cfg.aggregation.summation == "secagg":
        parts.append(
            "Secure aggregation (SecAgg+): the server learns only the sum of the surviving "
            "sites' quantised updates, not any single site's update, as long as fewer than "
            "the threshold of a site's neighbours collude with it."
        )
    elif cfg.aggregation.summation == "ckks":
        parts.append(
            "CKKS-encrypted aggregation: the sites share one CKKS key pair (128-bit parameters) "
            "and the server, which never holds the secret key, adds ciphertexts and learns "
            "only the decrypted sum; any single site colluding with the server can decrypt "
            "every site's update."
        )
    else:
        parts.append("No secure aggregation: the server sees each site's update in the clear.")
    if cfg.aggregation.strong_summation is not None:
        a = cfg.aggregation
        when = " and ".join(
            ([f"rounds {a.strong_every}, {2 * a.strong_every}, ... (counting from 1)"]
             if a.strong_every else [])
            + (["the final round"] if a.strong_final else [])
        )
        parts.append(
            f"Tiered protection: {when} use {a.strong_summation} instead of {a.summation} "
            "(each round's record names its summation); the other rounds have only the "
            f"protection of {a.summation}."
        )
    if cfg.privacy.enabled and cfg.privacy.debug_unnoised_statistics:
        parts.append(
            "NOT PRIVATE: privacy.debug_unnoised_statistics = true, so the record holds "
            "un-noised per-round statistics of the private updates and the ε figures are "
            "not a valid claim."
        )
    elif cfg.privacy.enabled:
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
    #: the simulation that ran (its sites and final model), for callers that score the
    #: run in process (:func:`veil.app.tune.tune_run`); never written anywhere
    federation: Simulation | None = field(default=None, repr=False, compare=False)

    @property
    def final_accuracy(self) -> float | None:
        """Last evaluated test accuracy (R² for regression)."""
        return self.result.final_accuracy

    @property
    def failed(self) -> str | None:
        """Why the run produced no model (every round aborted), else None."""
        return self.record.get("final", {}).get("failed")

    @property
    def always_rejected(self) -> list[int]:
        """Sites whose update was rejected (NaN/inf) in every round they were selected for."""
        return list(self.record.get("final", {}).get("sites_rejected_every_round", []))


def train(
    cfg: RunConfig,
    resume: bool = False,
    hooks: Sequence[RunHook] = (),
    dataset: Dataset | None = None,
    model: torch.nn.Module | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    restart: bool = False,
) -> TrainOutput:
    """Run a federated job end to end and write ``record.json`` and ``model.pt``.

    Args:
        cfg: validated config.
        resume: continue from the run directory's checkpoint.
        restart: start afresh in a run directory that already holds a run (e.g. one with
            a corrupt checkpoint); its files are kept in ``previous-N/`` inside it.
        hooks: extra hooks.
        dataset, model: override the configured ones.
        on_round: per-round callback.

    Raises:
        ConfigError: bad config, resume without a matching checkpoint, or both resume
            and restart.
        BudgetExceededError: the privacy ledger refused the plan.
    """
    if resume and restart:
        raise ConfigError("--resume continues a run and --restart starts it afresh; pick one")
    if cfg.tuning is not None:
        raise ConfigError(
            "this config has a [tuning] section: run it with `veil tune CONFIG` "
            "(veil.app.tune_run), which accounts the search in ε; remove [tuning] to train "
            "one configuration",
            key="tuning",
        )
    run_dir = cfg.run_dir()
    for d in (Path(cfg.output_dir), run_dir):
        if d.exists() and not d.is_dir():
            raise ConfigError(f"{d} exists and is not a directory", key="output_dir")
    if not resume and not restart and (run_dir / "checkpoint.pt").exists():
        raise ConfigError(
            f"{run_dir} already holds a run; use --resume to continue it, --restart to start "
            "it afresh (its files are kept in previous-N/), or a new name",
            key="name",
        )
    if not restart and _holds_a_search(run_dir):
        raise ConfigError(
            f"{run_dir} holds an accounted search (veil tune): its release, or one that "
            "stopped; training into it would replace or hide it: use a new name, or "
            "--restart (a released search's files go to previous-N/, a stopped one's "
            "unreleased trials are deleted)",
            key="name",
        )
    from veil._fs import RunLock

    if cfg.audit.log:
        from veil.audit.log import verify_before_run

        verify_before_run(Path(cfg.output_dir) / "audit.log")  # a broken log stops us now
    with RunLock(run_dir):  # one writer per run directory
        if restart:
            if (run_dir / TRIALS_DIR).is_dir():  # a killed search's unreleased trials
                import shutil

                shutil.rmtree(run_dir / TRIALS_DIR)
            set_aside(run_dir)
        return _train_locked(cfg, resume, hooks, dataset, model, on_round)


def _holds_a_search(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds what ``veil tune`` released (or an interrupted search)."""
    import json

    if (run_dir / INTERRUPTED).exists() or (run_dir / TRIALS_DIR).is_dir():
        return True  # a stopped (or killed) search: its trials are not to be kept
    try:
        return "tuning" in json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return False


def set_aside(run_dir: Path) -> Path | None:
    """Move an earlier run's files into ``run_dir/previous-N/`` (the next free N).

    Returns the new folder, or None when there was nothing to move. The lock file and
    earlier ``previous-*`` folders stay where they are.
    """
    from veil._fs import LOCK_FILE

    old = [p for p in run_dir.iterdir()
           if p.name != LOCK_FILE and not p.name.startswith("previous-")]
    if not old:
        return None
    n = 1
    while (run_dir / f"previous-{n}").exists():
        n += 1
    dest = run_dir / f"previous-{n}"
    dest.mkdir()
    for p in old:
        p.rename(dest / p.name)
    return dest


def _write_record(path: Path, record: dict[str, Any]) -> None:
    from veil._fs import write_json_atomic

    write_json_atomic(path, record, default=str)  # strict JSON: NaN/inf -> null


def _train_locked(
    cfg: RunConfig,
    resume: bool,
    hooks: Sequence[RunHook],
    dataset: Dataset | None,
    model: torch.nn.Module | None,
    on_round: Callable[[dict[str, Any]], None] | None,
) -> TrainOutput:
    run_dir = cfg.run_dir()
    started = now_iso()
    t0 = time.perf_counter()
    record: dict[str, Any] = {}

    def _on_round(rec: dict[str, Any]) -> None:
        record["rounds"] = fed.records
        record["final"] = _final(fed, time.perf_counter() - t0)
        _write_record(run_dir / RECORD, record)
        if on_round is not None:
            on_round(rec)

    site_files = load_site_files(cfg) if dataset is None else None
    parts = None
    if site_files is not None:
        arrays = site_files.to_arrays()
        ds, parts = arrays.dataset, arrays.train_parts
    else:
        ds = dataset if dataset is not None else load_data(cfg)
    canaries = None
    if cfg.audit.canaries and site_files is not None:
        raise ConfigError("canary audits do not work with data.files yet", key="audit.canaries")
    if cfg.audit.canaries:
        from veil.audit.canary import canary_parts, insert_canaries
        from veil.data import partition

        if ds.task != "classification":
            raise ConfigError("canary audits need a classification data set", key="audit.canaries")
        x, y, canaries = insert_canaries(
            ds.x_train, ds.y_train, cfg.audit.canaries, cfg.seed, ds.n_classes, cfg.data.sites
        )
        ds = Dataset(ds.name, x, y, ds.x_test, ds.y_test, ds.task, ds.n_classes)
        # a fixed partition of the normal data; each included canary joins its fixed site,
        # so one canary's coin changes one example at one site and nothing else
        base = partition(y[: canaries.base_size], cfg.data.sites, cfg.data.partition,
                         cfg.data.alpha, seed=cfg.seed)
        parts = canary_parts(base, canaries)
    fed = build_federation(cfg, hooks, ds, model, _on_round, parts=parts)
    builder = None if model is not None else {
        "name": cfg.model.name, "input_shape": list(ds.input_shape),
        "n_classes": ds.n_classes, "hidden": list(cfg.model.hidden)}
    record.update(
        {
            "veil_version": versions()["veil"],
            "name": cfg.name,
            "created": started,
            "config": cfg.model_dump(mode="json"),
            "versions": versions(),
            "seeds": {"seed": cfg.seed, "secure_rng": fed.secure_rng,
                      **fed.trainer.randomness},  # e.g. how the dropout masks are seeded
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
                "mode": cfg.federation.mode,
            },
            "model_path": MODEL,
        }
    )
    if site_files is not None:
        record["data"] = site_files.describe()
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
    record["final"].update(round_outcomes(result.rounds))
    from veil.models.export import model_info, save_model

    if record["final"].get("failed"):  # no model: the initial one would pass for a result
        record["model_path"] = None
    else:
        save_model(fed.model, run_dir, params=result.params, builder=builder)
    record["model"] = model_info(fed.model, builder)
    record["final"].update(_final_metrics(fed.model, result.params, ds, site_files))
    _write_record(run_dir / RECORD, record)
    if cfg.audit.log:
        from veil.audit.log import AuditLog

        AuditLog(Path(cfg.output_dir) / "audit.log").append_run(record)  # once per result
    return TrainOutput(result, run_dir, record, fed)


def round_outcomes(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How many rounds changed the model, ``failed`` when none did, and the sites whose
    update was rejected in every round they trained in (``sites_rejected_every_round``)."""
    aggregated = [r for r in rounds if not r.get("aborted") and not r.get("skipped")]
    out: dict[str, Any] = {"rounds_aggregated": len(aggregated)}
    if rounds and not aggregated:
        first = next((r.get("aborted") or r.get("skipped") for r in rounds), "")
        out["failed"] = (
            f"every one of the {len(rounds)} rounds aborted, so the model is the initial one "
            f"and none was written (first: {first})"
        )
    rejected: dict[int, int] = {}
    trained: dict[int, int] = {}
    for r in rounds:
        bad = set(int(s) for s in r.get("rejected", []))
        for s in set(int(s) for s in r.get("survivors", [])) | bad:
            trained[s] = trained.get(s, 0) + 1
        for s in bad:
            rejected[s] = rejected.get(s, 0) + 1
    out["sites_rejected_every_round"] = sorted(
        s for s, n in rejected.items() if n == trained.get(s, 0)
    )
    return out


def _final_metrics(
    model: torch.nn.Module, params: torch.Tensor, ds: Dataset, site_files: Any
) -> dict[str, Any]:
    """Metrics of the final model on the test data and, with data.files, on each site's own."""
    import copy

    from veil.errors import DataError
    from veil.models.metrics import evaluate_model, evaluate_sites, summarise_sites
    from veil.models.params import load_flat_params

    final = copy.deepcopy(model)
    load_flat_params(final, params.detach().reshape(-1))
    out: dict[str, Any] = {}
    try:
        out["metrics"] = evaluate_model(final, ds.x_test, ds.y_test, ds.task,
                                        ds.n_classes).to_dict()
        if site_files is not None:
            per = evaluate_sites(final, site_files.test_sets(), ds.task, ds.n_classes)
            out["site_metrics"] = {k: m.to_dict() for k, m in per.items()}
            out["site_metrics_summary"] = summarise_sites(per)
    except DataError as e:  # e.g. a diverged model whose outputs are NaN
        out["metrics_error"] = str(e)
    return out


def _run_with_canaries(fed: Simulation, run_dir: Path, canaries: Any, resume: bool) -> RunResult:
    if canaries is not None:
        from veil.audit.canary import save_canaries

        save_canaries(run_dir / "canaries.npz", canaries)
    return fed.run(resume=resume)


def _final(fed: Simulation, wall_s: float) -> dict[str, Any]:
    acc = loss = None
    for r in reversed(fed.records):
        if r.get("test_accuracy") is not None:
            acc, loss = r["test_accuracy"], r["test_loss"]
            break
    out: dict[str, Any] = {
        "test_accuracy": acc,
        "test_loss": loss,
        "rounds_completed": fed.next_round,
        "stopped_reason": fed.stopped_reason,
        "wall_s": wall_s,
    }
    from veil.federation.buffered import BufferedSimulation

    if isinstance(fed, BufferedSimulation):  # buffer size, staleness, simulated time
        out["schedule"] = fed.schedule()
    if fed.hides_counts:  # the run's wall time grows with the secret cohorts
        from veil.privacy.release import release_final

        release_final(out, fed.sampling, debug=fed.debug_unnoised)
    return out
