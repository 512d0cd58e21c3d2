"""Release evaluation: a copying generator is caught, an independent sample is not."""

from __future__ import annotations

import numpy as np
import pytest
from synth_tables import make_table

from veil.audit.synth_eval import distance_to_closest, marginal_errors, membership_attack, utility


def test_copying_generator_is_caught(real, holdout, schema) -> None:  # type: ignore[no-untyped-def]
    copy = {k: v.copy() for k, v in real.items()}
    mem = membership_attack(real, holdout, copy, schema, seed=0)
    assert mem["tpr_at_fpr"]["0.001"] > 0.9  # every member is at distance 0
    assert mem["n_nonmembers"] == 3000
    d = distance_to_closest(real, holdout, copy, schema)
    assert d["exact_copies_of_train"] == 1.0
    assert d["share_closer_to_train"] > 0.95
    assert marginal_errors(real, copy, schema)["two_way_max"] == 0.0


def test_independent_sample_leaks_nothing_measurable(real, holdout, schema) -> None:  # type: ignore[no-untyped-def]
    fresh = make_table(3000, 99)  # same distribution, no training record in it
    mem = membership_attack(real, holdout, fresh, schema, seed=0)
    assert abs(mem["auc"] - 0.5) < 0.05  # 3000 vs 3000: the AUC's sd is ~0.007
    assert mem["tpr_at_fpr"]["0.01"] < 0.05
    d = distance_to_closest(real, holdout, fresh, schema)
    assert abs(d["share_closer_to_train"] - 0.5) < 0.05
    u = utility(real, holdout, fresh, schema)
    assert abs(u["accuracy_gap"]) < 0.03
    errs = marginal_errors(real, fresh, schema)
    assert errs["one_way_max"] < 0.05 and set(errs["two_way"]) == {"x|c", "x|y", "c|y"}


def test_single_class_synthetic_table_still_evaluates(real, holdout, schema) -> None:  # type: ignore[no-untyped-def]
    one = {k: v[:50].copy() for k, v in real.items()}
    one["y"] = np.zeros(50, dtype=int)
    u = utility(real, holdout, one, schema)
    assert u["accuracy_synthetic"] == pytest.approx(np.mean(holdout["y"] == 0))
