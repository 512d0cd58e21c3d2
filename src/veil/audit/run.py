"""``veil audit RUN``: attack a finished run the way a real adversary could.

Reads ``record.json`` and the released model from the run directory (``model.pt`` through
:func:`veil.models.export.load_model`: veil's own models are rebuilt from ``model.json``;
a run of your own ``nn.Module`` is audited by passing an instance, ``audit_run(run,
model=MyNet())``), rebuilds the data split from the recorded config, and writes
``audit.json`` with:

* membership inference against the released model: the loss attack (train vs held-out
  examples) and LiRA with reference models trained like the target — federated runs of
  the run's own config on subsets of train+test drawn independently of the target
  (:mod:`veil.audit.reference`);
* the one-run canary audit, when the run stored ``canaries.npz`` (ε̂ beside claimed ε);
* gradient inversion of a site's small-batch update at the released model, seen alone, as
  a secure sum and with DP noise (image data only).
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from veil.audit.canary import audit_canaries, insert_canaries, load_canaries
from veil.audit.inversion import inversion_experiment
from veil.audit.log import AuditLog
from veil.audit.mia import loss_attack, resolves
from veil.audit.reference import lira_for_run
from veil.audit.shadow import DPParams
from veil.data import Dataset
from veil.errors import ConfigError, DataError
from veil.federation.record import RunRecord

__all__ = ["audit_run", "claimed_epsilon", "load_run_model", "load_run_data", "released_model",
           "summary_rows", "attack_results", "AUDIT", "CANARIES"]

AUDIT = "audit.json"
CANARIES = "canaries.npz"


def load_run_data(record: dict[str, Any]) -> Dataset:
    """The run's data set, split as the runtime split it (:meth:`RunRecord.dataset`).

    Raises:
        DataError: the data set or the recorded config cannot be loaded.
    """
    return RunRecord(".", record).dataset()


def load_run_model(run_dir: Path, record: dict[str, Any], ds: Dataset) -> torch.nn.Module:
    """The run's model with its final parameters (:meth:`RunRecord.model`).

    Raises:
        DataError: the model file is missing or does not fit the architecture.
    """
    return RunRecord(run_dir, record).model(ds)


def claimed_epsilon(record: dict[str, Any]) -> tuple[float | None, float]:
    """(claimed ε or None, δ) (:meth:`RunRecord.claimed_epsilon`)."""
    return RunRecord(".", record).claimed_epsilon()


def _reference_dp(record: dict[str, Any]) -> DPParams | None:
    """DP-SGD settings that mimic the run's sample-level DP (σ, C), if it had any.

    LiRA is strongest when the reference models are trained like the target; for a
    DP-SGD run that means with the same clipping and noise multiplier.
    """
    priv = (record.get("config") or {}).get("privacy") or {}
    sample = priv.get("sample_level") or {}
    if not (priv.get("enabled") and sample.get("enabled")):
        return None
    sig = ((record.get("privacy") or {}).get("noise") or {}).get("sample_noise_multiplier")
    if isinstance(sig, dict):
        vals = [float(v) for v in sig.values() if isinstance(v, (int, float))]
        sig = float(np.median(vals)) if vals else None
    if not isinstance(sig, (int, float)) or not math.isfinite(sig) or sig <= 0:
        return None
    return DPParams(noise_multiplier=float(sig), clip=float(sample.get("max_grad_norm", 1.0)))


def released_model(
    run_dir: str | Path, rr: RunRecord, ds: Dataset, model: torch.nn.Module | None = None
) -> torch.nn.Module:
    """The model a run released, loaded as :func:`veil.load_model` loads it.

    Args:
        run_dir: the run directory.
        rr: its record.
        ds: its data set (only for runs written before ``model.json`` existed).
        model: an instance of the run's own model class (needed when it trained one).

    Raises:
        DataError: the run failed (it released no model), or its model files are missing,
            unsafe or do not fit.
        ConfigError: the run trained your own ``nn.Module`` and ``model`` was not given.
    """
    from veil.models.export import MODEL_META, load_model

    run = Path(run_dir)
    failed = (rr.data.get("final") or {}).get("failed")
    if failed:
        raise DataError(f"{run} released no model to audit: the run failed ({failed})")
    if model is not None or (run / MODEL_META).is_file():
        try:
            return load_model(run, model=model)
        except ConfigError:
            if model is not None:
                raise
            raise ConfigError(
                f"the run in {run} trained your own model class "
                f"{(rr.data.get('model') or {}).get('class', '?')}, which veil cannot rebuild; "
                "audit it from Python: veil.audit.audit_run(run_dir, model=YourModel(...))",
                key="model",
            ) from None
    return rr.model(ds)  # a run written before model.json: rebuilt from its config


def _own_model(rr: RunRecord, model: torch.nn.Module | None) -> bool:
    """Whether the run trained a module of the user's (not one the config builds)."""
    info = rr.data.get("model")
    return model is not None or (isinstance(info, dict) and info.get("builder") is None)


def audit_run(
    run_dir: str | Path,
    lira_refs: int = 16,
    lira_epochs: int = 20,
    inversion: bool = True,
    inversion_steps: int = 300,
    confidence: float = 0.95,
    log_path: str | Path | None = None,
    seed: int = 0,
    model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Attack a finished run and write ``audit.json`` into its directory.

    Args:
        run_dir: directory with ``record.json``, ``model.pt`` (and ``canaries.npz``).
        lira_refs: reference models for LiRA (0 = skip LiRA).
        lira_epochs: unused (references train with the run's own config); kept for callers.
        inversion: run the gradient-inversion demonstration (image data only).
        inversion_steps: optimisation steps per inversion.
        confidence: confidence of the one-run ε̂.
        log_path: if given, append an ``"audit"`` entry to this hash-chained log.
        seed: seeds the attacks (reference models, subsampling, dummy images).
        model: an instance of your own model class when the run trained one (its weights
            are replaced by the released ones; LiRA's references train fresh copies).

    Returns:
        The audit results (also written to ``run_dir / "audit.json"``).

    Raises:
        DataError: the run directory, data or model cannot be read, or the run failed.
        ConfigError: the run trained your own model class and ``model`` was not given.
    """
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    run = Path(run_dir)
    rr = RunRecord(run)
    record = rr.data
    ds = rr.dataset()
    own = _own_model(rr, model)
    model = released_model(run, rr, ds, model)
    eps, delta = rr.claimed_epsilon()
    x_tr, y_tr = ds.x_train, ds.y_train
    out: dict[str, Any] = {
        "run": record.get("name"),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "claimed_epsilon": eps,
        "delta": delta,
        "membership": {},
        "one_run": None,
        "inversion": None,
    }
    cpath = run / CANARIES
    if cpath.is_file() and ds.task == "classification":
        cs = load_canaries(cpath)
        x_tr, y_tr, again = insert_canaries(ds.x_train, ds.y_train, len(cs), cs.seed, ds.n_classes)
        if not np.array_equal(again.included, cs.included):
            raise DataError(f"{cpath} does not match this run's data (wrong seed or data set)")
        res = audit_canaries(model, cs, delta, confidence).to_dict()
        res["claimed_epsilon"] = eps
        res["exceeds_claim"] = bool(eps is not None and res["epsilon_lower"] > eps)
        # whether ε̂ could have exceeded the claim at all with this many canaries
        res["can_detect_violation"] = bool(eps is not None and res["epsilon_max"] > eps)
        out["one_run"] = res
    if ds.task == "classification":
        rng = np.random.default_rng(seed)
        k = min(len(y_tr), len(ds.y_test))
        mi, ni = (
            rng.choice(len(y_tr), k, replace=False),
            rng.choice(len(ds.y_test), k, replace=False),
        )
        xs = np.concatenate([x_tr[mi], ds.x_test[ni]])
        ys = np.concatenate([y_tr[mi], ds.y_test[ni]])
        lab = np.r_[np.ones(k, bool), np.zeros(k, bool)]
        out["membership"]["loss"] = loss_attack(model, xs, ys, lab).to_dict()
        if lira_refs >= 4:
            out["membership"]["lira"] = lira_for_run(model, record, ds, x_tr, y_tr, lira_refs,
                                                     seed, own_model=own)
    shape = ds.input_shape
    img = shape if len(shape) == 3 else ((1, 8, 8) if ds.name == "digits" else None)
    if inversion and img is not None and ds.task == "classification":
        rng = np.random.default_rng(seed + 1)
        n_sites = int(min(5, max(2, record.get("plan", {}).get("n_sites", 5) or 5)))
        batches = []
        for _ in range(n_sites):
            i = rng.choice(len(y_tr), 4, replace=False)
            batches.append((x_tr[i].reshape(4, *img), y_tr[i]))
        clip, sigma = _dp_view_params(record)
        out["inversion"] = inversion_experiment(
            model, batches, img, clip=clip, noise_multiplier=sigma, steps=inversion_steps,
            seed=seed, flatten_input=len(shape) != 3,
        )
        out["inversion"]["mean_image_psnr"] = _mean_image_psnr(x_tr, batches[0][0])
    out["duration_s"] = time.perf_counter() - t0
    from veil._fs import write_json_atomic

    write_json_atomic(run / AUDIT, out, default=float)  # strict JSON: NaN/inf -> null
    if log_path is not None:
        AuditLog(log_path).append("audit", _log_summary(out))
    return out


def _dp_view_params(record: dict[str, Any]) -> tuple[float, float]:
    """Clip norm and noise multiplier for the DP view: the run's client-level DP if set."""
    pc = record.get("config", {}).get("privacy", {}) or {}
    cl = pc.get("client_level", {}) or {}
    clip = cl.get("clip_norm") or pc.get("clip_norm") or 1.0
    sigma = cl.get("noise_multiplier") or pc.get("noise_multiplier")
    if not sigma:
        sigma = (record.get("privacy") or {}).get("noise_multiplier") or 1.0
    return float(clip), float(sigma)


def _mean_image_psnr(x_tr: np.ndarray, truth: np.ndarray) -> float:
    from veil.audit.inversion import psnr

    mean = x_tr.mean(0).reshape(truth.shape[1:])
    return float(np.mean([psnr(mean, t) for t in truth]))


def _log_summary(out: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {"run": out["run"], "claimed_epsilon": out["claimed_epsilon"]}
    for name, r in out["membership"].items():
        if name == "lira":
            for v in ("online", "offline"):
                s[f"lira_{v}"] = {"auc": r[v]["auc"], "tpr_at_fpr": r[v]["tpr_at_fpr"]}
        else:
            s[name] = {"auc": r["auc"], "tpr_at_fpr": r["tpr_at_fpr"]}
    if out["one_run"]:
        s["epsilon_lower"] = out["one_run"]["epsilon_lower"]
        s["exceeds_claim"] = out["one_run"]["exceeds_claim"]
    if out["inversion"]:
        s["inversion_psnr"] = {k: v["psnr"] for k, v in out["inversion"]["views"].items()}
    return s


def summary_rows(out: dict[str, Any]) -> list[tuple[str, str]]:
    """The short summary ``veil audit`` prints: ε bound, ε̂ with its canaries, attacks.

    Args:
        out: what :func:`audit_run` returned (or ``audit.json``).
    """

    def f(v: Any, fmt: str = "{:.3f}") -> str:
        return fmt.format(v) if isinstance(v, (int, float)) and math.isfinite(v) else "—"

    eps = out.get("claimed_epsilon")
    rows = [("ε bound (claimed)", f"{f(eps, '{:.2f}')} (δ = {out.get('delta', 0):.0e})"
             if eps is not None else "none: not a DP run")]
    one = out.get("one_run")
    if one:
        note = "" if eps is not None else "; not a DP run, ε̂ is a lower bound only"
        rows.append((f"ε̂ (one-run audit, {one.get('m')} canaries, {one.get('r')} guesses, "
                     f"{one.get('v')} right)",
                     f"{f(one.get('epsilon_lower'), '{:.2f}')} (at most "
                     f"{f(one.get('epsilon_max'), '{:.2f}')} with {one.get('m')} canaries{note})"))
        if one.get("exceeds_claim"):
            rows.append(("ε̂ vs claim", "ε̂ EXCEEDS the claimed ε: the guarantee does not hold"))
        elif eps is not None and not one.get("can_detect_violation"):
            rows.append(("ε̂ vs claim", "this audit could not exceed the claim (more canaries "
                         "needed to detect a violation)"))
    else:
        rows.append(("ε̂ (one-run audit)", "no canaries in this run (audit.canaries = N)"))
    for name, r in attack_results(out.get("membership") or {}).items():
        nn_ = r.get("n_nonmembers")
        tpr = r.get("tpr_at_fpr") or {}
        t01 = (f(100 * tpr.get("0.001", math.nan), "{:.2f} %")
               if isinstance(nn_, int) and resolves(nn_, 0.001)
               else f"n/a ({nn_} non-members < 1000)")
        rows.append((f"MIA {name}: AUC / TPR@1% / TPR@0.1% FPR",
                     f"{f(r.get('auc'))} / {f(100 * tpr.get('0.01', math.nan), '{:.2f} %')}"
                     f" / {t01}"))
    inv = out.get("inversion")
    if inv:
        views = inv.get("views") or {}
        rows.append(("gradient inversion PSNR (dB): one site / secure sum / DP",
                     " / ".join(f((views.get(k) or {}).get("psnr"), "{:.1f}")
                                for k in ("single_site", "secure_sum", "dp"))))
    return rows


def attack_results(mem: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each membership attack's result by its plain name (``"loss threshold"``,
    ``"LiRA (online)"``, ``"LiRA (offline)"``), from ``audit.json``'s ``membership``."""
    out: dict[str, dict[str, Any]] = {}
    for name, r in mem.items():
        if name == "lira" and isinstance(r, dict):
            for v in ("online", "offline"):
                if isinstance(r.get(v), dict):
                    out[f"LiRA ({v})"] = r[v]
        elif isinstance(r, dict) and "auc" in r:
            out["loss threshold" if name == "loss" else name] = r
    return out
