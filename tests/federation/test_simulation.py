"""Server, Site and Simulation: site-owned state and streams, state_dict checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from veil.aggregation import FLOAT, Pipeline, PlainSum, Quantize, SecAggSum, UniformMean
from veil.aggregation.base import expect
from veil.data import load_digits, partition
from veil.federation import Simulation, make_server_optimizer
from veil.federation.checkpoint import CHECKPOINT
from veil.models import build_model
from veil.training import LocalConfig, Trainer


@dataclass(frozen=True)
class CountRounds:
    """Toy stateful stage: each site counts the rounds it took part in (its own state)."""

    name: str = "count_rounds"

    def domain(self, upstream):
        expect(self.name, upstream, FLOAT)
        return FLOAT

    def init(self) -> None:
        return None

    def init_site(self) -> Any:
        return np.zeros(1)

    def encode(self, state, site_states, updates, ctx):
        return updates, [s + 1 for s in site_states], {}

    def decode(self, state, aggregate, ctx):
        return None, aggregate, {}, None


def _sim(tmp_path, pipeline, rounds=3, cohort=3, run_dir=None) -> Simulation:
    d = load_digits()
    parts = partition(d.y_train, 6, "iid", seed=0)
    model = build_model("logreg", d.input_shape, d.n_classes, seed=0)
    return Simulation(
        model, d, parts, pipeline, Trainer(model, d.task, LocalConfig(1, 32, 0.1)),
        make_server_optimizer("fedavg", 1.0), rounds=rounds, seed=3, cohort=cohort,
        run_dir=run_dir, secure_rng=False,
    )


def test_site_stage_state_survives_rounds_and_resume(tmp_path) -> None:
    pipe = Pipeline([CountRounds(), UniformMean()], PlainSum())
    sim = _sim(tmp_path, pipe, rounds=4, run_dir=tmp_path / "a")
    res = sim.run()
    taken = np.zeros(6)
    for r in res.rounds:
        taken[r["cohort"]] += 1
    assert [float(s.stage_state[0][0]) for s in sim.sites] == taken.tolist()
    assert taken.max() >= 2  # some site took part in several rounds
    # the checkpoint holds tensors and JSON only, and restores each site's own state
    raw = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)
    assert set(raw) == {"format", "state", "tensors"}
    again = _sim(tmp_path, Pipeline([CountRounds(), UniformMean()], PlainSum()), rounds=4,
                 run_dir=tmp_path / "a")
    again.run(resume=True)
    assert [float(s.stage_state[0][0]) for s in again.sites] == taken.tolist()
    assert torch.equal(again.params, sim.params)


def test_each_site_rounds_with_its_own_stream(tmp_path) -> None:
    """A site's quantised row does not depend on which other sites share the round."""
    def pipe() -> Pipeline:
        return Pipeline([UniformMean(), Quantize(clip=0.5, bits=32)], SecAggSum(bits=32))

    rows = np.random.default_rng(0).uniform(-0.1, 0.1, (6, 650))
    a, b = _sim(tmp_path, pipe(), cohort=6), _sim(tmp_path, pipe(), cohort=6)
    all_six, _ = a.encode_at_sites(rows, np.arange(6), 2)
    two, _ = b.encode_at_sites(rows[[1, 4]], np.asarray([1, 4]), 2)
    np.testing.assert_array_equal(all_six[[1, 4]], two)
    same = np.tile(rows[:1], (2, 1))  # equal updates at two sites still round differently
    pair, _ = a.encode_at_sites(same, np.asarray([0, 3]), 2)
    assert not np.array_equal(pair[0], pair[1])


def test_server_holds_no_site_data(tmp_path) -> None:
    sim = _sim(tmp_path, Pipeline([UniformMean()], PlainSum()))
    state = sim.server.state_dict()
    assert set(state) == {"params", "pipeline", "server_opt"}
    assert not any(hasattr(sim.server, k) for k in ("sites", "data", "site_sizes"))
    assert repr(sim.sites[0]) == "Site(0)"
