"""`veil tune` (veil.app.tune): an accounted search over whole runs.

The search's ε is checked against Papernot & Steinke's bound computed by hand from the
run's recorded σ and schedule (add/remove one example at a site); the search runs
exactly K trials and releases only the best one; the score it releases is noisy; keys a
candidate may set leave the DP events unchanged; unsupported settings are refused."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_accounting import dp_event as dpe
from dp_accounting.rdp import rdp_privacy_accountant as rdp

import veil.app.tune as tune_mod
from tests.privacy.by_hand import ORDERS, search_epsilon_by_hand
from veil.app import train, tune_run
from veil.app.tune import INTERRUPTED, TRIALS_DIR, TUNABLE, parse_tuning
from veil.audit.run import claimed_epsilon
from veil.crypto.prg import SecureRng
from veil.errors import BudgetExceededError, ConfigError
from veil.federation.config import RunConfig, parse_config
from veil.privacy.tuning import TuningPlan

B, ROUNDS = 40, 3


def _raw(tmp_path: Path, **over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "tuned", "rounds": ROUNDS, "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "digits", "sites": 3, "limit": 600},
        "model": {"name": "logreg"},
        "privacy": {"enabled": True, "target_epsilon": 3.0, "delta": 1e-5,
                    "accountant": "rdp",
                    "sample_level": {"enabled": True, "expected_batch_size": B}},
        "tuning": {"candidates": [{"local.lr": 0.05}, {"local": {"lr": 0.5}}],
                   "mean_runs": 2.0, "score_noise": 10.0},
    }
    for dotted, v in over.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = v
    return raw


def _cfg(tmp_path: Path, **over: Any) -> RunConfig:
    return parse_config(_raw(tmp_path, **over))


#: a fixed noise (no calibration) and a budget it fits: the fast searches of these tests
FIXED = {"privacy.sample_level.noise_multiplier": 2.0, "privacy.target_epsilon": 50.0}


def _fixed_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int) -> RunConfig:
    """A fixed-noise search whose K is forced to ``k`` (the law of K is tested elsewhere)."""
    monkeypatch.setattr(TuningPlan, "draw", lambda self, rng: k)
    return _cfg(tmp_path, **FIXED)


def _sample_epsilon_by_hand(rec: dict[str, Any], score_noise: float = 10.0,
                            mean_runs: float = 2.0) -> float:
    """The search's sample-level ε by an independent route: σ and site sizes from the
    record, the schedule from the config's rule (q = B/n, round(1/q) steps per round),
    Papernot & Steinke's bound by hand on dp-accounting's per-event RDP curve."""
    sig = rec["privacy"]["noise"]["sample_noise_multiplier"]
    hand = []
    for n in sorted(set(rec["plan"]["site_sizes"])):
        s = sig[str(n)] if isinstance(sig, dict) else sig
        q = B / n
        steps = round(1 / q) * ROUNDS
        acc = rdp.RdpAccountant(list(ORDERS))
        acc.compose(dpe.SelfComposedDpEvent(dpe.PoissonSampledDpEvent(q, dpe.GaussianDpEvent(s)),
                                            steps))
        curve = np.asarray(acc._rdp) + ORDERS / (2 * score_noise**2)  # + the noisy score
        hand.append(search_epsilon_by_hand(s, mean_runs, 0.0, 1e-5, curve))
    return max(hand)


def test_search_epsilon_matches_the_bound_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path)
    # the law of K is tested in tests/privacy/test_tuning.py; here K = 2 bounds the time
    # (the accounting does not depend on the K drawn)
    monkeypatch.setattr(TuningPlan, "draw", lambda self, rng: 2)
    out = tune_run(cfg)
    rec = out.record
    eps = out.epsilon["sample"]
    # calibrated: the whole search spends the budget (to 0.5 %), never more
    assert 0.99 * 3.0 <= eps <= 3.0 + 1e-9
    assert _sample_epsilon_by_hand(rec) == pytest.approx(eps, rel=0.01)
    # what audits, reports and [policy] read is the search's ε, not one trial's
    assert rec["privacy"]["epsilon_spent"]["sample"] == eps
    assert claimed_epsilon(rec)[0] == pytest.approx(eps)
    trial = rec["privacy"]["trial"]  # the released trial's own ledger, inside the search
    assert trial["epsilon_sample_max"] <= trial["target_epsilon"] + 1e-9
    assert trial["target_epsilon"] == out.trial_target_epsilon
    # what the kept run's sites charged is what the search was accounted for: every site
    # trained in every round here, so each site's ε equals that of its planned event
    from veil.privacy.accounting import epsilon

    planned = tune_mod._planned(tune_mod._trial_config(
        cfg, out.selected, {"privacy.target_epsilon": out.trial_target_epsilon}))["sample"]
    for i, ev in enumerate(planned):
        assert trial["epsilon_sample_per_site"][str(i)] == pytest.approx(
            epsilon(ev, 1e-5, "rdp"), rel=1e-9)
    assert rec["privacy"]["privacy_target_epsilon"] == 3.0  # the budget is the search's
    assert out.trial_target_epsilon < 3.0  # each trial pays for the selection
    assert "not released" in rec["tuning"]["trials"]  # K stays secret
    assert out.selected in ({"local.lr": 0.05}, {"local.lr": 0.5})
    assert rec["config"]["local"]["lr"] == out.selected["local.lr"]
    files = {p.name for p in out.run_dir.iterdir()}
    assert "model.pt" in files and TRIALS_DIR not in files and "checkpoint.pt" not in files


def test_client_level_search_matches_the_bound_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every site in every round: no amplification, so one trial's RDP is closed-form,
    # ROUNDS·λ/(2z²) for the updates plus λ/(2·s²) for the server's noisy score
    cfg = _cfg(tmp_path, **{"data.sites": 5, "privacy.sample_level.enabled": False,
                            "privacy.client_level": {"enabled": True},
                            "privacy.target_epsilon": 8.0,
                            "tuning.client_score_noise": 2.0})
    monkeypatch.setattr(TuningPlan, "draw", lambda self, rng: 1)
    out = tune_run(cfg)
    z = out.record["privacy"]["noise"]["client_noise_multiplier"]
    curve = ORDERS * (ROUNDS / (2 * z**2) + 1 / (2 * 2.0**2))
    hand = search_epsilon_by_hand(z, 2.0, 0.0, 1e-5, curve)
    assert set(out.epsilon) == {"client"}
    assert out.epsilon["client"] == pytest.approx(hand, rel=0.01)
    assert 0.99 * 8.0 <= out.epsilon["client"] <= 8.0 + 1e-9
    assert out.record["tuning"]["client_score_noise"] == 2.0
    assert out.record["tuning"]["score_noise"] is None


def test_exactly_k_trials_run_and_only_the_best_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fixed noise: no calibration; K forced to 4; scores chosen by the test (a tie keeps
    # the earlier trial)
    cfg = _fixed_search(tmp_path, monkeypatch, k=4)
    scores = iter([0.2, 0.9, 0.4, 0.9])
    monkeypatch.setattr(tune_mod, "_score", lambda out, cfg, tc: next(scores))
    seen: list[tuple[float, Path, list[dict[str, Any]]]] = []

    def spy(tcfg: RunConfig, **kw: Any) -> Any:
        out = train(tcfg, **kw)
        seen.append((tcfg.local.lr, out.run_dir, copy.deepcopy(out.record["rounds"])))
        # at most the best trial so far and this one have files, at any time
        assert len(list(out.run_dir.parent.iterdir())) <= 2
        return out

    monkeypatch.setattr(tune_mod, "train", spy)
    lines: list[str] = []
    out = tune_run(cfg, progress=lines.append)
    assert len(seen) == 4
    lr, _, rounds = seen[1]
    assert out.selected == {"local.lr": lr}
    assert out.record["rounds"] == rounds  # the released run is trial 1's
    assert all(not d.exists() for _, d, _ in seen)  # no trial's own files remain
    assert not (out.run_dir / TRIALS_DIR).exists()
    assert out.record["tuning"]["selected_score"] == 0.9
    # K (4 here) is released nowhere: not in the result, the record or the report; the
    # progress lines (not published) never announce it in advance
    assert not hasattr(out, "trials")
    assert "not released" in out.record["tuning"]["trials"]
    assert "wall_s" not in out.record["tuning"]
    # the search's ε at the fixed noise, by the independent route
    assert out.epsilon["sample"] == pytest.approx(_sample_epsilon_by_hand(out.record), rel=0.01)
    assert [x for x in lines if x.startswith("trial")] == [f"trial {i} done" for i in (1, 2, 3, 4)]
    # the report says the model was selected and which ε covers what
    from veil.report.ledger import claimed, privacy_section

    assert claimed(out.record, None) == (pytest.approx(out.epsilon["sample"]), 50.0)
    html = privacy_section(out.record, None)
    assert "accounted search" in html and "secret, random number of trials" in html
    assert "4 trial" not in html
    assert "this trial: ε budget" in html
    # a later `veil train` of the same name would replace the release: refused
    with pytest.raises(ConfigError, match="accounted search"):
        train(_cfg(tmp_path, tuning=None))
    # nor do the lock or the file times say when the search began: one time for all files
    import json

    from veil._fs import LOCK_FILE

    assert "since" not in json.loads((out.run_dir / LOCK_FILE).read_text())
    times = {p.stat().st_mtime for p in out.run_dir.rglob("*")}
    assert max(times) - min(times) < 1e-3


def _scores(out: Any, cfg: RunConfig, n: int, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    counter = iter(range(10**6))
    monkeypatch.setattr(tune_mod.SecureRng, "fresh",
                        classmethod(lambda cls: SecureRng.from_seed(next(counter), "test/tune")))
    tc = parse_tuning(cfg.tuning)
    return np.array([tune_mod._score(out, cfg, tc) for _ in range(n)])


def test_the_released_score_is_noisy_with_the_stated_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path, **{**FIXED, "tuning": None})
    out = train(cfg)
    fed = out.federation
    assert fed is not None
    sizes = [len(s.y) for s in fed.sites]
    # the exact training accuracy, computed here from the sites' data and the final model
    import torch

    from veil.models.params import load_flat_params

    model = copy.deepcopy(fed.model)
    load_flat_params(model, out.result.params.reshape(-1))
    with torch.no_grad():
        right = [int((model(torch.as_tensor(np.asarray(s.x), dtype=torch.float32)).argmax(1)
                      .numpy() == np.asarray(s.y)).sum()) for s in fed.sites]
    exact = sum(right) / sum(sizes)
    # sample level: each site adds N(0, 10²) to its count; score = Σ counts / Σ sizes
    s = _scores(out, _cfg(tmp_path), 400, monkeypatch)
    want = 10.0 * np.sqrt(len(sizes)) / sum(sizes)
    # 400 draws: the std's relative error is ~3.5 %; tolerance 15 % (seeded streams);
    # the mean within 4 standard errors of the exact accuracy (unbiased, on training data)
    assert s.std() == pytest.approx(want, rel=0.15)
    assert abs(s.mean() - exact) < 4 * want / np.sqrt(400)
    # client level: the server adds N(0, 0.5²) to the sum of the sites' accuracies
    ccfg = _cfg(tmp_path, **{"privacy.sample_level.enabled": False,
                             "privacy.client_level": {"enabled": True},
                             "tuning.client_score_noise": 0.5})
    c = _scores(out, ccfg, 400, monkeypatch)
    assert c.std() == pytest.approx(0.5 / len(sizes), rel=0.15)
    exact_c = float(np.mean([r / n for r, n in zip(right, sizes)]))
    assert abs(c.mean() - exact_c) < 4 * (0.5 / len(sizes)) / np.sqrt(400)


def test_tunable_keys_leave_the_dp_events_unchanged(tmp_path: Path) -> None:
    # both levels on, both noises calibrated by the run (as a search's trials are)
    cfg = _cfg(tmp_path, **{"privacy.client_level": {"enabled": True},
                            "privacy.target_epsilon": 8.0})
    base = tune_mod._planned(tune_mod._trial_config(cfg, {}))
    assert set(base) == {"client", "sample"}
    values = {"local.lr": 0.7, "local.momentum": 0.5, "local.weight_decay": 0.01,
              "federation.server_optimizer": "fedadam", "federation.server_lr": 0.3,
              "federation.server_momentum": 0.5}
    assert set(values) == TUNABLE
    for key, v in values.items():
        assert tune_mod._planned(tune_mod._trial_config(cfg, {key: v})) == base, key
    # a key that is not tunable does change them (the check can fail)
    other = tune_mod._planned(tune_mod._trial_config(cfg, {"local.epochs": 3}))
    assert other != base


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"tuning.candidates": [{"local.epochs": 2}]}, "local.epochs"),
        ({"tuning.candidates": [{"privacy": {"sample_level": {"max_grad_norm": 9.0}}}]},
         "privacy.sample_level.max_grad_norm"),
        ({"tuning.candidates": []}, "candidates"),
        ({"tuning.candidates": [{}]}, "sets nothing"),
        ({"tuning.candidates": [{"local.lr": -1.0}]}, r"candidates\[0\]"),
        ({"tuning.mean_runs": 0.5}, "mean_runs"),
        ({"tuning.extra": 1}, "extra"),
        ({"tuning": None}, "no \\[tuning\\]"),
        ({"privacy.enabled": False}, "enable \\[privacy\\]"),
        ({"privacy.secure_rng": False}, "secure_rng"),
        ({"privacy.debug_unnoised_statistics": True}, "not be a valid"),
        ({"audit.canaries": 5}, "canar"),
        ({"data.dataset": "diabetes"}, "classification tasks only"),
        ({"tuning.score_noise": float("inf")}, "score_noise"),
        ({"tuning.candidates": [{"local": {"lr": 0.1}, "local.lr": 0.2}]}, "twice"),
        ({"privacy.client_level": {"enabled": True, "mechanism": "distributed"},
          "aggregation.summation": "secagg"}, "distributed"),
        ({"privacy.client_level": {"enabled": True}, "aggregation.summation": "secagg"},
         "exact accuracies"),
        ({"federation.mode": "buffered", "federation.buffered.buffer_size": 2}, "sync"),
        ({"federation.transport": "flower"}, "simulation"),
    ],
)
def test_unsupported_searches_are_refused(tmp_path: Path, over: dict[str, Any],
                                          match: str) -> None:
    # a bad [tuning] table is refused when the config is read; the rest by veil tune,
    # before any trial
    with pytest.raises(ConfigError, match=match):
        tune_run(_cfg(tmp_path, **over))
    assert not (tmp_path / "runs" / "tuned").exists() or not any(
        (tmp_path / "runs" / "tuned").rglob("model.pt"))


def test_a_bad_tuning_table_is_refused_when_the_config_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local.epochs"):
        parse_config(_raw(tmp_path, **{"tuning.candidates": [{"local.epochs": 2}]}))
    with pytest.raises(ConfigError, match="mean_runs"):
        parse_config(_raw(tmp_path, **{"tuning.mean_runs": 0.0}))


def test_over_budget_and_existing_runs_are_refused(tmp_path: Path) -> None:
    # a fixed noise whose single trial is already over the budget
    cfg = _cfg(tmp_path, **{"privacy.sample_level.noise_multiplier": 0.3})
    with pytest.raises(BudgetExceededError):
        tune_run(cfg)
    # a score noise so small that no trial fits
    with pytest.raises(BudgetExceededError, match="score_noise"):
        tune_run(_cfg(tmp_path, **{"tuning.score_noise": 0.05}))
    # a run config with [tuning] is not trained as one run
    with pytest.raises(ConfigError, match="veil tune"):
        train(_cfg(tmp_path))
    # a run directory that holds an interrupted search
    (tmp_path / "runs" / "tuned" / TRIALS_DIR / "t0").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds trials"):
        tune_run(_cfg(tmp_path))


def _toml(tmp_path: Path) -> Path:
    path = tmp_path / "tune.toml"
    path.write_text(
        f'name = "cli"\nrounds = 2\noutput_dir = "{tmp_path / "runs"}"\n'
        '[data]\ndataset = "digits"\nsites = 3\nlimit = 300\n'
        '[model]\nname = "logreg"\n'
        '[privacy]\nenabled = true\ntarget_epsilon = 40.0\naccountant = "rdp"\n'
        '[privacy.sample_level]\nenabled = true\nexpected_batch_size = 40\n'
        'noise_multiplier = 2.0\n'
        '[tuning]\nmean_runs = 1.5\ncandidates = [{ local = { lr = 0.1 } }, '
        '{ "local.lr" = 0.3 }]\n'
    )
    return path


def test_cli_tune_writes_the_selected_run(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from veil.cli.main import main

    path = _toml(tmp_path)
    assert main(["tune", str(path)]) == 0
    cap = capsys.readouterr()
    assert "whole search" in cap.out and "selected" in cap.out
    assert "trial" not in cap.out.replace("each trial's", "")  # K: progress is on stderr only
    assert "trial 1 done" in cap.err
    run = tmp_path / "runs" / "cli"
    assert (run / "record.json").exists() and not (run / TRIALS_DIR).exists()
    assert main(["train", str(path), "--quiet"]) == 2  # [tuning] goes through veil tune
    assert main(["tune", str(path), "--quiet"]) == 2  # the run is there already
    assert main(["tune", str(path), "--quiet", "--restart"]) == 0
    assert (run / "previous-1" / "record.json").exists()


def test_an_interrupted_search_is_not_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from veil.cli.main import main

    path = _toml(tmp_path)
    monkeypatch.setattr(TuningPlan, "draw", lambda self, rng: 3)
    calls = iter(range(10))

    def stop_in_second(tcfg: RunConfig, **kw: Any) -> Any:
        if next(calls) == 1:
            raise KeyboardInterrupt
        return train(tcfg, **kw)

    monkeypatch.setattr(tune_mod, "train", stop_in_second)
    assert main(["tune", str(path), "--quiet"]) == 130
    assert "cannot be resumed" in " ".join(capsys.readouterr().err.split())
    run = tmp_path / "runs" / "cli"
    # nothing of the unfinished search is left to release; a marker says it spent privacy
    assert not (run / TRIALS_DIR).exists() and not (run / "record.json").exists()
    assert (run / INTERRUPTED).exists()
    # the hash-chained log shows that a search ran, though nothing was released
    assert "stopped before it finished" in (tmp_path / "runs" / "audit.log").read_text()
    assert main(["tune", str(path), "--quiet"]) == 2  # refused: it would spend again
    assert "search-interrupted.json" in "".join(capsys.readouterr().err.split())
    monkeypatch.setattr(tune_mod, "train", train)
    assert main(["tune", str(path), "--quiet", "--restart"]) == 0
    assert (run / "record.json").exists() and (run / "previous-1" / INTERRUPTED).exists()


def test_a_stopped_search_deletes_its_trials_and_is_logged_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    cfg = _fixed_search(tmp_path, monkeypatch, k=3)
    run = cfg.run_dir()

    def killed_in_second(tcfg: RunConfig, **kw: Any) -> Any:
        if tcfg.name == "t1":  # `kill` (SIGTERM) while the second trial runs
            os.kill(os.getpid(), signal.SIGTERM)
        return train(tcfg, **kw)

    monkeypatch.setattr(tune_mod, "train", killed_in_second)
    for restart in (False, True):
        with pytest.raises(SystemExit):
            tune_run(cfg, restart=restart)
        assert not (run / TRIALS_DIR).exists() and (run / INTERRUPTED).exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    # two stopped searches of one config: two entries in the hash-chained log
    assert (tmp_path / "runs" / "audit.log").read_text().count("stopped before it finished") == 2
    # a search killed outright (SIGKILL) leaves trials/: veil train refuses it, and its
    # --restart deletes those trials instead of keeping them in previous-N/
    (run / TRIALS_DIR / "t0").mkdir(parents=True)
    (run / TRIALS_DIR / "t0" / "model.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="accounted search"):
        train(_cfg(tmp_path, tuning=None))
    train(_cfg(tmp_path, tuning=None), restart=True)
    assert not list(run.rglob("trials"))


def test_enforce_policy_reads_the_search_epsilon(tmp_path: Path) -> None:
    import json

    from veil.cli.main import main

    path = _toml(tmp_path)
    base = path.read_text()
    assert main(["tune", str(path), "--quiet"]) == 0
    rec = json.loads((tmp_path / "runs" / "cli" / "record.json").read_text())
    trial = rec["privacy"]["trial"]["epsilon_sample_max"]
    search = rec["privacy"]["epsilon_spent"]["sample"]
    assert trial < search  # the selection costs something
    # a bound between one trial's ε and the search's: missed, since [policy] reads the
    # search's ε (a policy reading the trial's would pass)
    path.write_text(base + f"[policy]\nmax_epsilon = {(trial + search) / 2}\n")
    assert main(["tune", str(path), "--quiet", "--restart", "--enforce-policy"]) == 3
    path.write_text(base + f"[policy]\nmax_epsilon = {search * 1.01}\n")
    assert main(["tune", str(path), "--quiet", "--restart", "--enforce-policy"]) == 0
