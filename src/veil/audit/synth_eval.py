"""Evaluation of a synthetic-data release: utility, marginal fidelity, leakage.

Given the real training table (what the generator saw), a real hold-out table (never seen)
and the synthetic table:

* **utility** — train on synthetic, test on real (TSTR) against train on real, test on real
  (TRTR), with the same classifier and features;
* **marginal errors** — total variation distance between real and synthetic 1-way and 2-way
  marginals on the schema's discrete domain (0 = identical, 1 = disjoint);
* **distance to closest record (DCR)** — for each synthetic record, the distance to the
  nearest training record and to the nearest hold-out record; a generator that copies its
  input puts synthetic records much closer to training records (share closer to train
  ≫ 0.5, as many exact copies);
* **membership inference** — the adversary holds the synthetic table and a candidate
  record and scores membership by minus its distance to the closest synthetic record;
  members are training records, non-members hold-out records (TPR at 0.1 % / 1 % FPR).

Distances use the schema's public scaling: numeric columns mapped to [0, 1] by their
public range, categorical columns one-hot (a mismatch costs √2).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from veil.audit.mia import evaluate_attack
from veil.errors import ConfigError

__all__ = [
    "distance_to_closest",
    "evaluate_release",
    "marginal_errors",
    "membership_attack",
    "record_matrix",
    "utility",
]

#: Most column pairs whose 2-way error is computed (the rest are skipped, and said so).
MAX_PAIRS = 400


def _tvd(a: np.ndarray, b: np.ndarray, size: int) -> float:
    p = np.bincount(a, minlength=size) / max(len(a), 1)
    q = np.bincount(b, minlength=size) / max(len(b), 1)
    return 0.5 * float(np.abs(p - q).sum())


def marginal_errors(real: Mapping[str, np.ndarray], syn: Mapping[str, np.ndarray],
                    schema: Any) -> dict[str, Any]:
    """Total variation distance of every 1-way and (up to :data:`MAX_PAIRS`) 2-way marginal.

    Args:
        real, syn: tables (column -> values).
        schema: the :class:`veil.synth.TableSchema` that discretises them.
    """
    rc, sc = schema.encode(real), schema.encode(syn)
    sizes = schema.sizes
    one = {c: _tvd(rc[c], sc[c], sizes[c]) for c in schema.names}
    two: dict[str, float] = {}
    pairs = list(itertools.combinations(schema.names, 2))
    for a, b in pairs[:MAX_PAIRS]:
        two[f"{a}|{b}"] = _tvd(rc[a] * sizes[b] + rc[b], sc[a] * sizes[b] + sc[b],
                               sizes[a] * sizes[b])
    return {
        "one_way": one,
        "two_way": two,
        "one_way_mean": float(np.mean(list(one.values()))),
        "one_way_max": float(np.max(list(one.values()))),
        "two_way_mean": float(np.mean(list(two.values()))) if two else None,
        "two_way_max": float(np.max(list(two.values()))) if two else None,
        "pairs_skipped": max(0, len(pairs) - MAX_PAIRS),
    }


def _classifier(kind: str, seed: int) -> Any:
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=2000, C=10.0)
    if kind == "gbdt":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=seed)
    raise ConfigError(f"classifier must be 'logreg' or 'gbdt', got {kind!r}",
                      key="evaluate.classifier")


def utility(train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray],
            syn: Mapping[str, np.ndarray], schema: Any, classifier: str = "logreg",
            seed: int = 0) -> dict[str, Any]:
    """Test accuracy of one classifier trained on real data and on synthetic data.

    Raises:
        ConfigError: the schema has no label, or an unknown classifier.
    """
    xte, yte = schema.features(test), schema.labels(test)
    out: dict[str, Any] = {"classifier": classifier, "n_test": int(len(yte))}
    for name, tab in (("real", train), ("synthetic", syn)):
        y = schema.labels(tab)
        if len(np.unique(y)) < 2:  # a synthetic table may hold one class only
            out[f"accuracy_{name}"] = float(np.mean(yte == y[0]))
            continue
        clf = _classifier(classifier, seed).fit(schema.features(tab), y)
        out[f"accuracy_{name}"] = float(clf.score(xte, yte))
    out["accuracy_gap"] = out["accuracy_real"] - out["accuracy_synthetic"]
    return out


def record_matrix(table: Mapping[str, np.ndarray], schema: Any) -> np.ndarray:
    """Whole records (label included) as vectors for distances (see module docstring)."""
    feats = schema.features(table)
    if schema.label is None:
        return feats
    lab = schema.column(schema.label)
    return np.hstack([feats, np.eye(lab.size)[schema.labels(table)]])


def _nearest(ref: np.ndarray, query: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1).fit(ref)
    d, _ = nn.kneighbors(query)
    return d[:, 0]


def distance_to_closest(train: Mapping[str, np.ndarray], holdout: Mapping[str, np.ndarray],
                        syn: Mapping[str, np.ndarray], schema: Any) -> dict[str, Any]:
    """DCR of synthetic records to training and to hold-out records.

    The hold-out set is subsampled to the training set's size (or vice versa) so both
    reference sets are equally dense.
    """
    tr, ho, sy = (record_matrix(t, schema) for t in (train, holdout, syn))
    m = min(len(tr), len(ho))
    rng = np.random.default_rng(0)
    tr, ho = tr[rng.permutation(len(tr))[:m]], ho[rng.permutation(len(ho))[:m]]
    d_tr, d_ho = _nearest(tr, sy), _nearest(ho, sy)
    return {
        "median_to_train": float(np.median(d_tr)),
        "median_to_holdout": float(np.median(d_ho)),
        "share_closer_to_train": float(np.mean(d_tr < d_ho) + 0.5 * np.mean(d_tr == d_ho)),
        "exact_copies_of_train": float(np.mean(d_tr == 0.0)),
        "exact_copies_of_holdout": float(np.mean(d_ho == 0.0)),
        "reference_size": int(m),
        "hist_train": np.histogram(d_tr, bins=20, range=(0, max(d_tr.max(), d_ho.max(), 1e-9)))
        [0].tolist(),
        "hist_holdout": np.histogram(d_ho, bins=20, range=(0, max(d_tr.max(), d_ho.max(), 1e-9)))
        [0].tolist(),
        "hist_max": float(max(d_tr.max(), d_ho.max())),
    }


def membership_attack(train: Mapping[str, np.ndarray], holdout: Mapping[str, np.ndarray],
                      syn: Mapping[str, np.ndarray], schema: Any, seed: int = 0) -> dict[str, Any]:
    """The closest-synthetic-record membership attack (scores = minus distance).

    Members: training records (subsampled to the hold-out size); non-members: the hold-out
    records. The lowest resolvable FPR is 1 / n_nonmembers.
    """
    tr, ho, sy = (record_matrix(t, schema) for t in (train, holdout, syn))
    rng = np.random.default_rng(seed)
    m = min(len(tr), len(ho))
    tr, ho = tr[rng.permutation(len(tr))[:m]], ho[rng.permutation(len(ho))[:m]]
    # Ties (equal distances on binned data) are broken at random, never in the attack's favour.
    jitter = rng.random(2 * m) * 1e-9
    scores = -np.concatenate([_nearest(sy, tr), _nearest(sy, ho)]) + jitter
    labels = np.r_[np.ones(m, bool), np.zeros(m, bool)]
    return evaluate_attack("closest-synthetic-record", scores, labels).to_dict()


def evaluate_release(release: Any, train: Mapping[str, np.ndarray],
                     holdout: Mapping[str, np.ndarray], classifier: str = "logreg",
                     seed: int = 0) -> dict[str, Any]:
    """Every evaluation of one :class:`veil.synth.SyntheticRelease` (JSON-friendly).

    Args:
        release: the release (its table, schema and ledger).
        train: the real table the generator was given.
        holdout: real records it never saw (utility test set and attack non-members).
        classifier: ``"logreg"`` or ``"gbdt"`` for utility.
        seed: seeds the classifier and the attack's subsampling.
    """
    schema, syn = release.schema, release.table
    out: dict[str, Any] = {
        "privacy": {
            "epsilon": release.epsilon,
            "delta": release.delta,
            "attribute_epsilon": release.attribute_epsilon(),
            "accountant": "rdp (dp-accounting)",
        },
        "marginals": marginal_errors(train, syn, schema),
        "dcr": distance_to_closest(train, holdout, syn, schema),
        "membership": membership_attack(train, holdout, syn, schema, seed),
    }
    if schema.label is not None:
        out["utility"] = utility(train, holdout, syn, schema, classifier, seed)
    return out
