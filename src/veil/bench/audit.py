"""`veil bench audit`: what leaks from a non-private vs a DP (ε = 1) model, and from updates.

Setting: scikit-learn digits (1,797 examples, train+test pooled), MLP 64-128-10.

* **Membership inference, centrally trained models.** Targets and references have
  *independent* membership: each target trains on a Bernoulli(1/2) draw of the pool,
  the references on balanced halves drawn from another seed (each example IN for exactly
  half of them). The paired leave-one-out design, where every example is IN for half of
  all models *including the target*, biases AUC below 0.5 and is not used. Non-private:
  ordinary SGD; DP: targets trained with **Opacus** DP-SGD as the engine (Poisson
  sampling), σ calibrated to ε = 1, δ = 1e-5 and ε reported by veil's dp-accounting
  layer; references run the same DP-SGD (same σ, clip, rate) vectorised, as an adversary
  who knows the algorithm would. TPR@0.1 % is only reported where the non-members
  resolve it (≥ 1,000).
* **LiRA like the target (federated).** :func:`veil.audit.reference.lira_like_target`:
  reference models are federated runs of the target's own config (2 sites, the same
  local training and aggregation). An over-fitted target (600 digits, train accuracy
  100 %) and a target trained without the evaluated members at all (the null case);
  AUC and TPR@1 % as mean with a 95 % t-interval over seeds.
* **One-run audit.** 200 mislabelled canaries, half inserted; ε̂ at 95 % for a
  non-private model and the Opacus ε = 1 model, beside the largest ε̂ 200 canaries can
  show and the number of canaries needed for ε̂ to be able to exceed the claim.
* **Gradient inversion.** One site's 4-image update vs the secure sum of 5 sites vs the
  clipped update with Gaussian noise (σ = 1); PSNR/SSIM against chance levels.

Quick mode: one repetition of the central parts, two seeds of the federated LiRA, fewer
models. Full mode: medians over 3 seeds (central), 4 seeds (federated LiRA).
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import numpy as np
import torch

from veil.bench._machine import machine_info

__all__ = ["run"]

_HIDDEN = (128,)


def _pool() -> tuple[np.ndarray, np.ndarray]:
    from veil.data import load_digits

    d = load_digits()
    return np.concatenate([d.x_train, d.x_test]), np.concatenate([d.y_train, d.y_test])


def _opacus_train(x: np.ndarray, y: np.ndarray, eps: float, epochs: int, seed: int,
                  ) -> tuple[torch.nn.Module, float, float]:
    """DP-SGD with Opacus as the training engine; σ and ε from veil's dp-accounting layer.

    Returns the model, the noise multiplier σ (calibrated by
    :func:`veil.privacy.accounting.calibrate_noise` for the whole schedule) and the ε(δ=1e-5)
    of the steps actually taken, from :func:`veil.privacy.accounting.epsilon`.
    """
    from opacus import PrivacyEngine

    from veil.models import build_model
    from veil.privacy.accounting import calibrate_noise, dpsgd_round_event, epsilon

    batch, delta = 64, 1e-5
    m = build_model("mlp", (64,), 10, hidden=_HIDDEN, seed=seed + 100)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    dl = torch.utils.data.DataLoader(
        ds, batch_size=batch, generator=torch.Generator().manual_seed(seed)
    )
    q = batch / len(ds)  # Opacus' Poisson loader samples each example with this rate
    steps = epochs * len(dl)
    sigma = calibrate_noise(
        lambda z: dpsgd_round_event(z, q, steps), eps, delta, "rdp", "noise_multiplier"
    )
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pe = PrivacyEngine(accountant="rdp")
        m, opt, dl = pe.make_private(
            module=m, optimizer=opt, data_loader=dl, noise_multiplier=sigma,
            max_grad_norm=1.0, poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(seed + 1))
        for _ in range(epochs):
            for xb, yb in dl:
                if len(yb) == 0:
                    continue
                opt.zero_grad()
                torch.nn.functional.cross_entropy(m(xb), yb).backward()
                opt.step()
    spent = epsilon(dpsgd_round_event(sigma, q, steps), delta, "rdp")
    return m._module.eval(), float(sigma), float(spent)


def _brief(r: Any) -> dict[str, Any]:
    return {"auc": r.auc, "tpr@0.1%": r.tpr_at_fpr["0.001"], "tpr@1%": r.tpr_at_fpr["0.01"],
            "n_nonmembers": r.n_nonmembers}


def _independent_masks(n_targets: int, n_refs: int, n: int, seed: int) -> tuple[Any, Any]:
    """Target masks (Bernoulli 1/2) and balanced reference masks, from unrelated seeds."""
    from veil.audit.shadow import random_halves

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A6]))
    return rng.random((n_targets, n)) < 0.5, random_halves(n_refs, n, seed + 1000)


def _ce(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    return torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(y), reduction="none").numpy()


def _non_private(seed: int, quick: bool) -> dict[str, Any]:
    from veil.audit.mia import evaluate_attack, lira_scores, logit_confidence
    from veil.audit.shadow import TrainParams, models_logits, train_models
    from veil.models import build_model

    x, y = _pool()
    model = build_model("mlp", (64,), 10, hidden=_HIDDEN)
    n_t, k = (2, 12) if quick else (4, 24)
    t = time.perf_counter()
    tmasks, refs = _independent_masks(n_t, k, len(y), seed)
    masks = np.concatenate([tmasks, refs])
    flat = train_models(model, x, y, masks, TrainParams(epochs=40, lr=0.05), seed)
    lg = models_logits(model, flat, x)
    phi = logit_confidence(lg, y)
    lab = tmasks.ravel()
    loss = -_ce(lg[:n_t].reshape(-1, 10), np.tile(y, n_t))
    res = {"loss": _brief(evaluate_attack("loss", loss, lab))}
    for online in (True, False):
        sc = np.concatenate([lira_scores(phi[j], phi[n_t:], refs, online) for j in range(n_t)])
        res["lira-online" if online else "lira-offline"] = _brief(evaluate_attack("lira", sc, lab))
    acc = lg[:n_t].argmax(-1) == y
    return res | {"train_acc": float(acc[tmasks].mean()), "test_acc": float(acc[~tmasks].mean()),
                  "targets": n_t, "reference_models": k, "seconds": time.perf_counter() - t}


def _dp(seed: int, quick: bool) -> dict[str, Any]:
    from veil.audit.mia import evaluate_attack, lira_scores, logit_confidence, model_outputs
    from veil.audit.shadow import DPParams, TrainParams, models_logits, train_models
    from veil.models import build_model

    x, y = _pool()
    model = build_model("mlp", (64,), 10, hidden=_HIDDEN)
    t = time.perf_counter()
    n_t, k_ref, epochs = (1, 8, 15) if quick else (3, 16, 15)
    tmasks, refs = _independent_masks(n_t, k_ref, len(y), seed + 7)
    targets = []
    sigma = eps_spent = 0.0
    for j in range(n_t):
        tm, sigma, eps_spent = _opacus_train(x[tmasks[j]], y[tmasks[j]], 1.0, epochs, seed + j)
        targets.append(model_outputs(tm, x))
    fr = train_models(model, x, y, refs, TrainParams(epochs=epochs, lr=0.5, momentum=0.0), seed,
                      dp=DPParams(sigma, 1.0))
    phr = logit_confidence(models_logits(model, fr, x), y)
    lab = tmasks.ravel()
    res: dict[str, Any] = {
        "loss": _brief(
            evaluate_attack("loss", np.concatenate([-_ce(lt, y) for lt in targets]), lab)
        )
    }
    for online in (True, False):
        s = np.concatenate(
            [lira_scores(logit_confidence(lt, y), phr, refs, online) for lt in targets]
        )
        res["lira-online" if online else "lira-offline"] = _brief(evaluate_attack("lira", s, lab))
    accs = [float((lt.argmax(-1) == y)[~tmasks[j]].mean()) for j, lt in enumerate(targets)]
    return res | {"epsilon": eps_spent, "noise_multiplier": sigma, "targets": n_t,
                  "reference_models": k_ref, "test_acc": statistics.median(accs),
                  "seconds": time.perf_counter() - t}


def _one_run(seed: int) -> dict[str, Any]:
    from veil.audit.canary import audit_canaries, canaries_for, insert_canaries
    from veil.audit.shadow import TrainParams, train_models
    from veil.models import build_model
    from veil.models.params import load_flat_params

    x, y = _pool()
    t = time.perf_counter()
    xc, yc, cs = insert_canaries(x, y, 200, seed, 10)
    model = build_model("mlp", (64,), 10, hidden=_HIDDEN)
    flat = train_models(
        model, xc, yc, np.ones((1, len(yc)), bool), TrainParams(epochs=40, lr=0.05), seed
    )
    load_flat_params(model, flat[0])
    plain = audit_canaries(model, cs, 1e-5)
    dpm, _, eps = _opacus_train(xc, yc, 1.0, 15, seed)
    dp = audit_canaries(dpm, cs, 1e-5)
    return {"canaries": len(cs), "eps_hat_non_private": plain.epsilon_lower,
            "eps_hat_dp": dp.epsilon_lower, "claimed_epsilon_dp": eps,
            "eps_hat_max": dp.epsilon_max, "canaries_needed_to_exceed_claim": canaries_for(
                eps, 1e-5), "can_exceed_claim": dp.epsilon_max > eps,
            "dp_exceeds_claim": dp.epsilon_lower > eps, "seconds": time.perf_counter() - t}


def _fed_config(seed: int, out_dir: str) -> Any:
    from veil.federation.config import parse_config

    return parse_config({
        "name": "target", "seed": seed, "rounds": 6, "output_dir": out_dir,
        "data": {"sites": 2, "partition": "iid"}, "model": {"name": "mlp", "hidden": [128]},
        "local": {"epochs": 10, "batch_size": 16, "lr": 0.1, "momentum": 0.9},
        "federation": {"cohort_size": None, "dropout_rate": 0.0, "server_optimizer": "fedavg",
                       "server_lr": 1.0, "eval_every": 6},
        "audit": {"log": False},
    })


def _t_interval(v: list[float]) -> list[float]:
    from scipy.stats import t as student

    a = np.asarray(v, dtype=np.float64)
    if len(a) < 2:
        return [float(a.mean()), float(a.mean())]
    h = float(student.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
    return [float(a.mean() - h), float(a.mean() + h)]


def _lira_federated(quick: bool) -> dict[str, Any]:
    """LiRA with references trained like the target, over- fitted and null targets."""
    import tempfile

    from veil.audit.mia import model_outputs
    from veil.audit.reference import LiraSetup, _train_one, lira_like_target
    from veil.data import Dataset

    x, y = _pool()
    seeds = [0, 1] if quick else [0, 1, 2, 3]
    n_refs = 6 if quick else 8
    t = time.perf_counter()
    rows: dict[str, list[dict[str, float]]] = {"overfit": [], "null": []}
    with tempfile.TemporaryDirectory(prefix="veil-bench-lira-") as tmp:
        for seed in seeds:
            idx = np.random.default_rng(seed).permutation(len(y))[:900]
            px, py = x[idx[:600]], y[idx[:600]]
            member = np.zeros(600, bool)
            member[:300] = True
            cfg = _fed_config(seed, tmp)
            for case in ("overfit", "null"):
                tx, ty = (px[member], py[member]) if case == "overfit" else (
                    x[idx[600:]], y[idx[600:]])  # the null target never saw the pool
                ds = Dataset("digits", tx, ty, px[~member], py[~member], "classification", 10)
                target = _train_one(cfg, ds)
                acc = float((model_outputs(target, tx).argmax(1) == ty).mean())
                r = lira_like_target(target, LiraSetup(cfg, n_refs, seed + 100), px, py, member,
                                     "digits", 10)
                rows[case].append({"train_acc": acc, "online_auc": r["online"]["auc"],
                                   "offline_auc": r["offline"]["auc"],
                                   "online_tpr@1%": r["online"]["tpr_at_fpr"]["0.01"],
                                   "offline_tpr@1%": r["offline"]["tpr_at_fpr"]["0.01"]})
    out: dict[str, Any] = {"seeds": len(seeds), "reference_models": n_refs,
                           "members": 300, "non_members": 300}
    for case, rs in rows.items():
        out[case] = {k: {"mean": float(np.mean([r[k] for r in rs])),
                         "ci95": _t_interval([r[k] for r in rs]),
                         "per_seed": [r[k] for r in rs]} for k in rs[0]}
    out["seconds"] = time.perf_counter() - t
    return out


def _inversion(seed: int) -> dict[str, Any]:
    from veil.audit.inversion import inversion_experiment, psnr
    from veil.data import load_digits
    from veil.models import build_model

    d = load_digits(image=True)
    rng = np.random.default_rng(seed)
    model = build_model("mlp", (1, 8, 8), 10, hidden=_HIDDEN, seed=seed)
    batches = []
    for _ in range(5):
        i = rng.choice(len(d.y_train), 4, replace=False)
        batches.append((d.x_train[i], d.y_train[i]))
    t = time.perf_counter()
    r = inversion_experiment(model, batches, (1, 8, 8), clip=1.0, noise_multiplier=1.0,
                             steps=300, seed=seed)
    mean = d.x_train.mean(0)
    out = {f"psnr_{k}": v["psnr"] for k, v in r["views"].items()}
    out |= {f"ssim_{k}": v["ssim"] for k, v in r["views"].items()}
    out["psnr_random_images"] = r["noise_psnr"]
    out["psnr_mean_image"] = float(np.mean([psnr(mean, im) for im in batches[0][0]]))
    out["seconds"] = time.perf_counter() - t
    return out


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in rows[0].items():
        if isinstance(v, dict):
            out[k] = _median([r[k] for r in rows])
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(r[k] for r in rows)
        else:
            out[k] = v if len(rows) == 1 else [r[k] for r in rows]
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Run the audit benchmark (module docstring). Numbers are medians over repetitions.

    Returns:
        Results with the attacks side by side, targets checked, and the machine.
    """
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seeds = [0] if quick else [0, 1, 2]
        rows = [{"non_private": _non_private(s, quick), "dp_eps1": _dp(s, quick),
                 "one_run": _one_run(s), "inversion": _inversion(s)} for s in seeds]
        fed_lira = _lira_federated(quick)
    finally:
        torch.set_num_threads(threads)
    res = _median(rows)
    res["lira_like_target"] = fed_lira
    npv, dp, inv = res["non_private"], res["dp_eps1"], res["inversion"]
    of, nul = fed_lira["overfit"], fed_lira["null"]
    res["targets"] = {
        "non_private_lira_tpr@0.1%_above_chance": (npv["lira-online"]["tpr@0.1%"] or 0) > 0.005,
        "dp_lira_auc<=0.55": max(dp["lira-online"]["auc"], dp["lira-offline"]["auc"]) <= 0.55,
        "lira_like_target_overfit_auc>=0.6": min(of["online_auc"]["mean"],
                                                 of["offline_auc"]["mean"]) >= 0.6,
        "lira_like_target_null_auc_within_0.5±0.03": all(
            abs(nul[k]["mean"] - 0.5) <= 0.03 for k in ("online_auc", "offline_auc")),
        "inversion_single_site_recovers": inv["psnr_single_site"] > inv["psnr_mean_image"] + 10,
        "inversion_fails_on_secure_sum": inv["psnr_secure_sum"] < inv["psnr_mean_image"] + 3,
        "inversion_fails_under_dp": inv["psnr_dp"] < inv["psnr_mean_image"],
    }
    # TPR@0.1 % only where the DP targets' non-members resolve it (>= 1,000 of them)
    dp_low = [dp[a]["tpr@0.1%"] for a in ("lira-online", "lira-offline")]
    if all(v is not None for v in dp_low):
        res["targets"]["dp_lira_tpr@0.1%<=0.5%"] = max(dp_low) <= 0.005
    res["repetitions"] = len(seeds)
    res["quick"] = quick
    res["seconds"] = time.perf_counter() - t0
    res["machine"] = machine_info()
    return res
