"""``veil bench robust``: accuracy and attack success with and without each defence.

Task: scikit-learn's digits split IID across 20 sites (seed 0), the MLP 64-64-10, FedAvg
(every site every round, 1 local epoch of SGD at lr 0.1, batch 16), 30 rounds. 20% of the
sites (4, a seeded choice) are malicious, through the simulation's site-behaviour hook
(:mod:`veil.aggregation.attacks`):

* ``sign_flip``: they send ``−4·u`` (their trained update pointing backwards);
* ``boost``: they send ``25·u`` (a scaled update);
* ``backdoor``: half of each malicious site's examples carry a 2x2 bright corner patch and
  the label 0; they train honestly on that data (no boosting). Attack success = share of
  triggered test images of other classes classified as 0.

Defences, each in the same run of the same task: plain FedAvg (``fedavg``), coordinate-wise
``median``, ``trimmed_mean`` (β = 0.2, i.e. 4 of 20 trimmed at each end), ``multi_krum``
(f = 4, m = 16), and FedAvg behind the anomaly screen dropping flagged updates
(``anomaly_drop``; robust z-score > 3.5 on the norm or the cosine to the median). Every
defence also runs without attack (``clean``): its cost when nobody attacks.

Targets (``targets_met``), against the clean FedAvg run's accuracy ``A``:

* ``fedavg_fails_{sign_flip,boost}``: the attack works (FedAvg accuracy < A − 20 points)
  and ``fedavg_fails_backdoor`` (success ≥ 50%), so the defended rows mean something;
* ``{rule}_{sign_flip,boost}_within_2pt`` for the three robust rules and the anomaly
  screen: accuracy ≥ A − 2 points (issue 15);
* ``{rule}_backdoor_below_20pct``: backdoor success < 20% where FedAvg's is ≥ 50%;
* ``anomaly_flags_attackers``: under sign-flip and boost, recall of the flagged sites ≥ 0.95
  and precision ≥ 0.8 over all rounds.

Everything is seeded (split, init, batches, attackers); no privacy randomness is used.
``quick=True``: 5 rounds, two defences — a smoke test, not the measurement.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from veil.bench._machine import machine_info

__all__ = ["run", "SITES", "ATTACKER_FRACTION", "DEFENCES", "ATTACKS"]

SITES, ATTACKER_FRACTION, ROUNDS, SEED = 20, 0.2, 30, 0

#: defence name -> aggregation config keys
DEFENCES: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "median": {"robust": "median"},
    "trimmed_mean": {"robust": "trimmed_mean", "trim_fraction": 0.2},
    "multi_krum": {"robust": "multi_krum", "krum_f": 4, "krum_m": 16},
    "anomaly_drop": {"anomaly": True, "anomaly_drop": True},
}
ATTACKS = ("clean", "sign_flip", "boost", "backdoor")
SIGN_FLIP_SCALE, BOOST_FACTOR, POISON_FRACTION = 4.0, 25.0, 0.5


def _one(defence: str, attack: str, rounds: int) -> dict[str, Any]:
    import torch

    from veil.aggregation.attacks import (
        DIGITS_TRIGGER,
        Boost,
        Malicious,
        SignFlip,
        backdoor_success,
        choose_malicious,
        poison_sites,
    )
    from veil.data import partition
    from veil.federation.build import build_federation, load_data
    from veil.federation.config import parse_config

    cfg = parse_config({
        "seed": SEED, "rounds": rounds,
        "data": {"dataset": "digits", "sites": SITES},
        "model": {"name": "mlp", "hidden": [64]},
        "local": {"epochs": 1, "lr": 0.1, "batch_size": 16},
        "federation": {"eval_every": rounds},
        "aggregation": DEFENCES[defence],
        "audit": {"log": False},
    })
    ds = load_data(cfg)
    parts = partition(ds.y_train, SITES, "iid", 0.5, seed=SEED)
    bad = choose_malicious(SITES, ATTACKER_FRACTION, SEED)
    if attack == "backdoor":
        ds, parts = poison_sites(ds, parts, bad, DIGITS_TRIGGER, POISON_FRACTION, SEED)
    fed = build_federation(cfg, dataset=ds, parts=parts)
    fed.run_dir = None
    if attack == "sign_flip":
        fed.behaviour = Malicious(bad, SignFlip(SIGN_FLIP_SCALE))
    elif attack == "boost":
        fed.behaviour = Malicious(bad, Boost(BOOST_FACTOR))
    t0 = time.perf_counter()
    res = fed.run()
    wall = time.perf_counter() - t0
    model = fed.final_model()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).argmax(1).numpy()

    tp = fp = 0
    for r in res.rounds:
        flagged = set(r.get("flagged", []))
        tp += len(flagged & bad)
        fp += len(flagged - bad)
    screened = bool(DEFENCES[defence].get("anomaly")) and attack != "clean"
    n_bad_rounds = len(bad) * len(res.rounds) if screened else 0
    return {
        "accuracy": res.final_accuracy,
        "backdoor_success": backdoor_success(predict, ds.x_test, ds.y_test, DIGITS_TRIGGER),
        "flag_recall": tp / n_bad_rounds if n_bad_rounds else None,
        "flag_precision": tp / (tp + fp) if screened and tp + fp else None,
        "flagged_honest_per_round": fp / len(res.rounds) if res.rounds else None,
        "aborted_rounds": sum(1 for r in res.rounds if "aborted" in r),
        "wall_s": wall,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Every defence against every attack on the same task, side by side.

    Returns:
        ``results[defence][attack]`` (accuracy, backdoor success, flag recall/precision,
        wall time), ``accuracy_drop`` (clean FedAvg accuracy minus each cell's), the
        setting, ``targets_met`` and the machine.
    """
    rounds = 5 if quick else ROUNDS
    defences = ["fedavg", "median"] if quick else list(DEFENCES)
    results: dict[str, dict[str, Any]] = {
        d: {a: _one(d, a, rounds) for a in ATTACKS} for d in defences
    }
    clean = float(results["fedavg"]["clean"]["accuracy"])
    drop = {
        d: {a: round(clean - float(v["accuracy"]), 4) for a, v in row.items()}
        for d, row in results.items()
    }
    fed = results["fedavg"]
    targets: dict[str, bool] = {
        "fedavg_fails_sign_flip": fed["sign_flip"]["accuracy"] < clean - 0.20,
        "fedavg_fails_boost": fed["boost"]["accuracy"] < clean - 0.20,
        "fedavg_fails_backdoor": fed["backdoor"]["backdoor_success"] >= 0.5,
    }
    for d in defences:
        if d == "fedavg":
            continue
        for a in ("sign_flip", "boost"):
            targets[f"{d}_{a}_within_2pt"] = results[d][a]["accuracy"] >= clean - 0.02
        targets[f"{d}_backdoor_below_20pct"] = bool(
            results[d]["backdoor"]["backdoor_success"] < 0.20
            and fed["backdoor"]["backdoor_success"] >= 0.5
        )
    if "anomaly_drop" in results:
        an = results["anomaly_drop"]
        targets["anomaly_flags_attackers"] = all(
            (an[a]["flag_recall"] or 0) >= 0.95 and (an[a]["flag_precision"] or 0) >= 0.8
            for a in ("sign_flip", "boost")
        )
    return {
        "task": {
            "dataset": "digits", "sites": SITES, "attackers": ATTACKER_FRACTION,
            "rounds": rounds, "model": "mlp 64-64-10", "seed": SEED,
            "sign_flip_scale": SIGN_FLIP_SCALE, "boost_factor": BOOST_FACTOR,
            "poison_fraction": POISON_FRACTION, "defences": {d: DEFENCES[d] for d in defences},
        },
        "clean_fedavg_accuracy": clean,
        "results": results,
        "accuracy_drop": drop,
        "targets_met": targets,
        "quick": quick,
        "machine": machine_info(),
    }
