"""The privacy-utility policy: a constructed run missing a target fails the check."""

from __future__ import annotations

import math

import pytest

from veil.audit.policy import (
    Policy,
    RunMeasurements,
    check_policy,
    frontier,
    mark_sweep,
    measurements_from_release,
    measurements_from_run,
)
from veil.errors import ConfigError

POLICY = Policy(max_epsilon=3.0, delta=1e-5, max_mia_tpr=0.01, min_accuracy=0.85)


def _attack(tpr: float | None, n: int = 5000) -> dict:
    return {"name": "lira-online", "auc": 0.55, "tpr_at_fpr": {"0.001": tpr, "0.01": 0.05},
            "n_members": n, "n_nonmembers": n}


def _record(eps: float, acc: float, delta: float = 1e-5) -> dict:
    return {"config": {"privacy": {"enabled": True, "delta": delta}},
            "privacy": {"epsilon_spent": eps, "delta": delta},
            "final": {"test_accuracy": acc}, "rounds": []}


def test_run_meeting_every_target_passes() -> None:
    m = measurements_from_run(_record(2.9, 0.9),
                              {"membership": {"loss": _attack(0.002),
                                              "lira": {"lira-online": _attack(0.008)}}})
    assert m.mia_tpr == 0.008 and m.mia_attack == "lira-online"  # worst attack counts
    r = check_policy(POLICY, m)
    assert r.passed and r.to_dict()["releasable"]
    assert [t.name for t in r.targets] == ["epsilon", "mia_tpr", "accuracy"]


@pytest.mark.parametrize(
    ("record", "audit", "missed"),
    [
        (_record(3.5, 0.9), {"membership": {"loss": _attack(0.002)}}, "epsilon"),
        (_record(2.0, 0.80), {"membership": {"loss": _attack(0.002)}}, "accuracy"),
        (_record(2.0, 0.9), {"membership": {"loss": _attack(0.05)}}, "mia_tpr"),
        # ε stated at a larger δ than the policy's is not comparable
        (_record(2.0, 0.9, delta=1e-3), {"membership": {"loss": _attack(0.002)}}, "epsilon"),
        # 200 non-members cannot resolve 0.1 % FPR
        (_record(2.0, 0.9), {"membership": {"loss": _attack(0.0, n=200)}}, "mia_tpr"),
        # an attack whose evaluation reports no TPR at 0.1 % FPR (not resolvable)
        (_record(2.0, 0.9), {"membership": {"loss": {**_attack(0.0, n=200),
                                                      "tpr_at_fpr": {"0.001": None}}}},
         "mia_tpr"),
        # no audit at all: the MIA target is not measured, hence missed
        (_record(2.0, 0.9), None, "mia_tpr"),
    ],
)
def test_constructed_run_missing_a_target_fails(record: dict, audit: dict | None,
                                                missed: str) -> None:
    r = check_policy(POLICY, measurements_from_run(record, audit))
    assert not r.passed
    assert [t.name for t in r.missed] == [missed]
    assert r.to_dict()["releasable"] is False


def test_run_without_dp_misses_an_epsilon_target() -> None:
    rec = {"config": {"privacy": {"enabled": False}}, "rounds": [{"test_accuracy": 0.99}]}
    m = measurements_from_run(rec)
    assert m.epsilon == math.inf and m.accuracy == 0.99
    r = check_policy(Policy(max_epsilon=10.0), m)
    assert not r.passed and r.missed[0].name == "epsilon"


def test_release_measurements_and_toml() -> None:
    ev = {"privacy": {"epsilon": 1.0, "delta": 1e-5},
          "membership": _attack(0.004, n=2000),
          "utility": {"accuracy_synthetic": 0.91}}
    m = measurements_from_release(ev)
    assert m == RunMeasurements(1.0, 1e-5, 0.004, "lira-online", 2000, 0.91)
    p = Policy.from_dict({"max_epsilon": 1, "max_mia_tpr": 0.005, "min_accuracy": 0.9})
    assert check_policy(p, m).passed
    assert not check_policy(Policy.from_dict({"min_accuracy": 0.95}), m).passed
    assert Policy().empty and check_policy(Policy(), RunMeasurements()).passed
    with pytest.raises(ConfigError, match="policy"):
        Policy.from_dict({"max_eps": 1})
    with pytest.raises(ConfigError, match="policy.min_accuracy"):
        Policy.from_dict({"min_accuracy": 90})


def test_frontier_of_a_sweep_and_the_configurations_that_satisfy_the_policy() -> None:
    runs = [RunMeasurements(epsilon=e, delta=1e-5, accuracy=a)
            for e, a in [(0.5, 0.70), (1.0, 0.80), (2.0, 0.78), (3.0, 0.86), (8.0, 0.86),
                         (math.inf, 0.90), (1.0, None)]]
    assert frontier(runs) == [0, 1, 3, 5]  # (2, .78) and (8, .86) are dominated
    ok = [i for i in frontier(runs)
          if check_policy(Policy(max_epsilon=3.0, min_accuracy=0.8), runs[i]).passed]
    assert ok == [1, 3]


def test_enforce_policy_marks_a_constructed_run_not_releasable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from veil.audit.policy import POLICY_FILE, enforce_policy, policy_from_toml

    (tmp_path / "record.json").write_text(json.dumps(_record(3.5, 0.9)))
    (tmp_path / "audit.json").write_text(json.dumps({"membership": {"loss": _attack(0.002)}}))
    cfg = tmp_path / "run.toml"
    cfg.write_text('name = "x"\n[policy]\nmax_epsilon = 3.0\nmax_mia_tpr = 0.01\n')
    pol = policy_from_toml(cfg)
    assert pol == Policy(max_epsilon=3.0, max_mia_tpr=0.01)
    r = enforce_policy(tmp_path, pol, run_audit=False)
    assert not r.passed and [t.name for t in r.missed] == ["epsilon"]
    written = json.loads((tmp_path / POLICY_FILE).read_text())
    assert written["releasable"] is False and written["policy"]["max_epsilon"] == 3.0
    (tmp_path / "record.json").write_text(json.dumps(_record(2.0, 0.9)))
    assert enforce_policy(tmp_path, pol, run_audit=False).passed
    assert json.loads((tmp_path / POLICY_FILE).read_text())["releasable"] is True
    (tmp_path / "plain.toml").write_text('name = "x"\n')
    assert policy_from_toml(tmp_path / "plain.toml") is None


def test_train_enforce_policy_exits_3_and_the_report_says_not_releasable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from veil.cli.main import main
    from veil.report import render_report

    def cfg(min_acc: float) -> str:
        p = tmp_path / f"p{min_acc}.toml"
        p.write_text(f'name = "pol{min_acc}"\nrounds = 1\noutput_dir = "{tmp_path}"\n'
                     '[data]\nsites = 2\n[model]\nname = "logreg"\n'
                     f"[policy]\nmin_accuracy = {min_acc}\n")
        return str(p)

    assert main(["train", cfg(0.999), "--quiet", "--enforce-policy"]) == 3
    pol = json.loads((tmp_path / "pol0.999" / "policy.json").read_text())
    assert pol["releasable"] is False and pol["targets"][0]["name"] == "accuracy"
    html = render_report(tmp_path / "pol0.999").read_text()
    assert "not releasable" in html
    assert main(["train", cfg(0.05), "--quiet", "--enforce-policy"]) == 0
    assert json.loads((tmp_path / "pol0.05" / "policy.json").read_text())["releasable"]
    plain = tmp_path / "plain.toml"
    plain.write_text(f'name = "plain"\nrounds = 1\noutput_dir = "{tmp_path}"\n[model]\n'
                     'name = "logreg"\n')
    assert main(["train", str(plain), "--quiet", "--enforce-policy"]) == 2  # no [policy]
    assert not (tmp_path / "plain").exists()  # refused before training
    bad = tmp_path / "bad.toml"
    bad.write_text(plain.read_text().replace('"plain"', '"bad"') + "[policy]\nmax_eps = 1\n")
    assert main(["train", str(bad), "--quiet"]) == 2  # a typo in [policy] fails fast
    assert not (tmp_path / "bad").exists()


def test_sweep_rows_marked_with_frontier_and_policy() -> None:
    rows = [{"epsilon": 1.0, "accuracy": 0.8, "epsilon_spent": 0.99},
            {"epsilon": 2.0, "accuracy": 0.78, "epsilon_spent": 1.98},
            {"epsilon": math.inf, "accuracy": 0.9}]
    out = mark_sweep(rows, Policy(max_epsilon=1.5, min_accuracy=0.75), 1e-5)
    assert [r["frontier"] for r in out] == [True, False, True]
    assert [r["meets_policy"] for r in out] == [True, False, False]
    assert "meets_policy" not in mark_sweep(rows, None, 1e-5)[0]


def test_privacy_sweep_marks_frontier_and_policy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from veil.app import load_config, privacy_sweep

    cfg_p = tmp_path / "s.toml"
    cfg_p.write_text(f'name = "sw"\nrounds = 1\noutput_dir = "{tmp_path}"\n[data]\nsites = 2\n'
                     '[model]\nname = "logreg"\n[privacy]\nenabled = true\n'
                     '[privacy.sample_level]\nenabled = true\n'
                     "[policy]\nmax_epsilon = 2.0\nmin_accuracy = 0.01\n")
    rows = privacy_sweep(load_config(cfg_p), [1.0, math.inf], tmp_path / "out")
    assert [r["meets_policy"] for r in rows] == [True, False]  # ε = ∞ misses max_epsilon
    assert rows[1]["frontier"]  # the non-private run has the best accuracy
    assert "meets_policy" in (tmp_path / "out" / "sweep.md").read_text()
