"""What a reader of a hidden-cohort DP run learns from its record, table and checkpoint.

Neighbouring relation (the one veil states and dp-accounting uses): add/remove one site —
run B is run A with its last site removed, everything public held fixed (seed, cohort
*rate* q = ``federation.cohort_fraction``, clip, noise multiplier, rounds). Under Poisson
cohort sampling with amplification, a reader of what the run releases must not be able to
tell A from B except through noised quantities: every field that is not noised (or a
function of the public configuration) must be identical in A and B.

The adversary here strips the noised fields (test metrics of the noised model, the
DP stage's noised measurements) and compares everything else. Before the fix the rounds
held ``n_selected``/``n_summed`` (sensitivity-1 counts of the secret cohort), bytes,
protocol counters and timings, so the views differed (the control with
``debug_unnoised_statistics`` shows the same adversary succeeds when they are kept).

Privacy randomness is derived from the seed (``privacy.secure_rng = false``) so that the
test is deterministic: site 11's coin for the cohort is the only difference in the draw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from veil.privacy.release import DP_STAGES

N, ROUNDS = 12, 5


def _cfg(tmp_path: Path, name: str, sites: int, summation: str = "secagg",
         rounds: int = ROUNDS, **privacy: Any) -> Any:
    from veil.federation.config import parse_config

    return parse_config({
        "name": name, "seed": 3, "rounds": rounds, "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "sites": sites, "partition": "iid", "limit": 480},
        "model": {"name": "logreg"},
        "federation": {"cohort_fraction": 0.5, "sampling": "poisson", "dropout_rate": 0.2},
        "aggregation": {"summation": summation, "quantize_range": 0.5},
        "privacy": {"enabled": True, "target_epsilon": 50.0, "secure_rng": False,
                    "accountant": "rdp", **privacy,
                    "client_level": {"enabled": True, "clip_norm": 0.5,
                                     "noise_multiplier": 1.0}},
        "audit": {"log": False},
    })


def _pair(tmp_path: Path, **privacy: Any) -> tuple[list[dict], list[dict], Any, Any]:
    """Rounds of run A (N sites) and of run B (A minus its last site)."""
    from veil.data.partition import partition
    from veil.federation.build import build_federation, load_data

    a_cfg = _cfg(tmp_path, "a", N, **privacy)
    ds = load_data(a_cfg)
    parts = partition(ds.y_train, N, "iid", seed=3)
    a = build_federation(a_cfg, dataset=ds, parts=parts)
    b = build_federation(_cfg(tmp_path, "b", N - 1, **privacy), dataset=ds, parts=parts[:-1])
    return a.run().rounds, b.run().rounds, a, b


def _view(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the adversary compares: every field that is not noised."""
    out = []
    for r in rounds:
        v = {k: x for k, x in r.items() if k not in ("test_loss", "test_accuracy")}
        v["measurements"] = {k: x for k, x in (r.get("measurements") or {}).items()
                             if k.split("/", 1)[0] not in DP_STAGES}
        out.append(v)
    return out


def test_neighbouring_poisson_runs_release_identical_unnoised_fields(tmp_path: Path) -> None:
    from veil.cli.progress import summary_table

    ra, rb, a, b = _pair(tmp_path)
    assert a.sampling == "poisson" and not a.record_cohorts  # hidden cohorts
    assert _view(ra) == _view(rb)
    for r in ra:  # nothing that counts the cohort is left...
        assert not {"n_selected", "n_summed", "late", "bytes_total", "duration_s"} & set(r)
        assert "survivors" not in r["measurements"]
    assert any(k.split("/")[0] in DP_STAGES for k in ra[0]["measurements"])  # ...noised stays
    # the checkpoint's copy of the records and the CLI table say no more
    from veil.federation.checkpoint import load_checkpoint

    ck_a = load_checkpoint(a.run_dir, a.state_dict())["records"]
    ck_b = load_checkpoint(b.run_dir, b.state_dict())["records"]
    assert _view(ck_a) == _view(ra) and _view(ck_b) == _view(rb)

    def table(rounds: list[dict]) -> list[list[str]]:
        t = summary_table("t", rounds)
        cols = [c.header for c in t.columns]
        return [list(c._cells) for c, h in zip(t.columns, cols)
                if h in ("round", "sites in sum", "bytes / site")]

    assert table(ra) == table(rb)
    assert set(table(ra)[1]) == {"–"}


def test_control_the_same_adversary_tells_them_apart_when_counts_are_kept(
    tmp_path: Path,
) -> None:
    """With the un-noised debug flag the counts stay, and the adversary sees the site."""
    ra, rb, a, _ = _pair(tmp_path, debug_unnoised_statistics=True)
    assert _view(ra) != _view(rb)
    # the very fields the fix drops are the ones that differ (site 11 was drawn in a round)
    diff = {k for x, y in zip(ra, rb) for k in set(x) | set(y) if x.get(k) != y.get(k)}
    assert "n_selected" in diff


def test_release_round_is_fail_closed_under_poisson_and_leaves_fixed_cohorts() -> None:
    """Poisson: only listed keys stay (an unknown new key is dropped); fixed-size cohorts'
    counts are public (size from the config, dropouts from the seed) and stay."""
    from veil.federation.simulation import hide_membership
    from veil.privacy.release import LOST, release_round

    def rec() -> dict[str, Any]:
        return {"round": 0, "cohort": [1, 4, 7], "survivors": [1, 7], "late": 1,
                "bytes_sent": {"1": 9}, "bytes_total": 9, "bytes_per_site_mean": 9.0,
                "duration_s": 0.3, "test_accuracy": 0.5, "epsilon_client": 1.0,
                "measurements": {"survivors": 2.0, "secagg/dropped": 1.0,
                                 "dp_fedavg/x": 0.1, "uniform_mean/denominator": 3.0},
                "unknown_new_field": 1}

    poisson = rec()
    hide_membership(poisson)
    release_round(poisson, "poisson")
    assert poisson == {"round": 0, "test_accuracy": 0.5, "epsilon_client": 1.0,
                       "measurements": {"dp_fedavg/x": 0.1, "uniform_mean/denominator": 3.0}}
    fixed = rec()
    hide_membership(fixed)
    kept = {**fixed, "measurements": dict(fixed["measurements"])}
    release_round(fixed, "fixed")
    assert fixed == kept and fixed["n_selected"] == 3 and fixed["n_summed"] == 2
    lost = {"round": 1, "n_selected": 0, "skipped": "empty cohort", "measurements": {}}
    release_round(lost, "poisson")
    assert lost == {"round": 1, "measurements": {}, "aborted": LOST}


def _rounds_in(ledger_state: dict[str, Any]) -> int:
    """How many rounds a site took part in, read off its ledger's run-length log."""
    return sum(int(n) for _, n in ledger_state["log"].get("site", []))


def test_the_server_checkpoint_does_not_reveal_participation(tmp_path: Path) -> None:
    """Sample-level DP-SGD + hidden client-level Poisson cohorts: each site's own ledger
    (its ε says how often it took part) lives in that site's own file, every one of
    them rewritten every round; the adversary holding the server's checkpoint.pt finds
    no ledger and no per-site state; resume restores every site's ledger exactly."""
    from veil.data.partition import partition
    from veil.federation.build import build_federation, load_data
    from veil.federation.checkpoint import CHECKPOINT, load_checkpoint, site_state_path, unpack

    def read_file(path: Path) -> Any:  # what the site itself reads back
        raw = torch.load(path, weights_only=True)
        return unpack(json.loads(raw["state"]), raw["tensors"])

    n, rounds = 6, 3  # each site's RDP ledger is the slow part
    priv = {"delta": 1e-4, "sample_level": {"enabled": True, "expected_batch_size": 16,
                                            "max_grad_norm": 1.0, "noise_multiplier": 1.0}}
    cfg = _cfg(tmp_path, "ck", n, "plain", rounds, **priv)
    ds = load_data(cfg)
    parts = partition(ds.y_train, n, "iid", seed=3)
    fed = build_federation(cfg, dataset=ds, parts=parts)
    fed.run()
    took_part = [_rounds_in(s.ledger.state_dict()) for s in fed.sites]
    assert len(set(took_part)) > 1  # participation differs between sites (seeded draw)

    # the adversary: the server's checkpoint, read in full
    raw = torch.load(fed.run_dir / CHECKPOINT, weights_only=True)
    text = raw["state"]
    state = {k: v for k, v in json.loads(text)["__map__"]}
    assert "sites" not in state and state["site_files"] == n
    assert '"site"' not in text  # no sample-level ledger entity anywhere
    # the sites' own files: one each, for the round the checkpoint names; the site
    # itself reads its participation from it (the control: the data is really there)
    for i in range(n):
        path = site_state_path(fed.run_dir, i, rounds)
        assert [p.name for p in path.parent.iterdir()] == [path.name]
        assert _rounds_in(read_file(path)["ledger"]) == took_part[i]

    again = build_federation(cfg, dataset=ds, parts=parts)
    again.load_state_dict(load_checkpoint(again.run_dir, again.state_dict()))
    assert [s.ledger.state_dict()["log"] for s in again.sites] == [
        s.ledger.state_dict()["log"] for s in fed.sites]  # the same charges, site by site
    assert [s.ledger.epsilon() for s in again.sites] == [s.ledger.epsilon() for s in fed.sites]


def test_an_empty_poisson_cohort_under_central_dp_releases_noise_not_a_skip(
    tmp_path: Path,
) -> None:
    """DP-FedAvg's release for a round with nobody sampled is the noise alone.

    Skipping the round would leave the model exactly where it was: a reader comparing
    the model before and after would learn, un-noised, that the cohort was empty.
    """
    from veil.federation.build import build_federation
    from veil.federation.config import parse_config

    for seed in range(20):  # q = 0.05 of 12 sites: P(empty) = 0.95^12 = 0.54 per draw
        cfg = parse_config({
            "name": f"e{seed}", "seed": seed, "rounds": 1, "output_dir": str(tmp_path),
            "data": {"dataset": "digits", "sites": N, "partition": "iid", "limit": 480},
            "model": {"name": "logreg"},
            "federation": {"cohort_fraction": 0.05, "sampling": "poisson"},
            "privacy": {"enabled": True, "target_epsilon": 50.0, "secure_rng": False,
                        "accountant": "rdp", "debug_unnoised_statistics": True,
                        "client_level": {"enabled": True, "clip_norm": 0.5,
                                         "noise_multiplier": 1.0}},
            "audit": {"log": False},
        })
        fed = build_federation(cfg)
        before = fed.params.clone()
        rec = fed.run().rounds[0]
        if rec["n_selected"] == 0:
            break
    else:
        raise AssertionError("no empty cohort in 20 seeded draws")
    assert "skipped" not in rec and "aborted" not in rec
    moved = (fed.params - before).double()
    # noise std of the mean: z * C / expected cohort size (max(1, round(0.6)) = 1 site)
    std = rec["measurements"]["dp_fedavg/noise_std"]
    assert std > 0
    assert 0.7 < float(moved.std()) / std < 1.3  # d = 650 draws: ±30% is > 7 sigma wide


def test_the_run_summary_of_a_hidden_poisson_run_keeps_no_timing(tmp_path: Path) -> None:
    # the run's wall time grows with the secret cohorts' sizes: release_final drops it
    # (fail-closed) for hidden Poisson cohorts, as release_round does per round
    from veil.app.train import _final
    from veil.federation.build import build_federation
    from veil.privacy.release import release_final

    fed = build_federation(_cfg(tmp_path, "f", N, rounds=2))
    fed.run()
    assert fed.hides_counts
    final = _final(fed, wall_s=1.5)
    assert "wall_s" not in final and final["rounds_completed"] == 2
    assert set(final) <= {"status", "rounds_completed", "stopped_reason", "test_accuracy",
                          "test_loss", "schedule"}
    kept = {"wall_s": 1.5, "exchanges": 9, "rounds_completed": 2, "novel_key": 1}
    release_final(kept, "fixed")  # fixed cohorts: their counts are public
    assert kept == {"wall_s": 1.5, "exchanges": 9, "rounds_completed": 2, "novel_key": 1}
    release_final(kept, "poisson")
    assert kept == {"rounds_completed": 2}  # unknown keys go too
    debug = {"wall_s": 1.5}
    release_final(debug, "poisson", debug=True)
    assert debug == {"wall_s": 1.5}
