"""model.pt is a plain state_dict; veil's loader refuses a crafted pickle without running it."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from veil.errors import ConfigError, DataError
from veil.models import MLP, build_model, flat_params
from veil.models.export import load_model, load_state_dict, safe_load, save_model


class _Payload:
    """A hostile checkpoint object: unpickling it runs code (here: writes a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _crafted_checkpoint(path: Path, marker: Path, torch_format: bool) -> None:
    state = {"format": 1, "params": torch.zeros(3), "hooks": _Payload(marker)}
    if torch_format:
        torch.save(state, path)  # zip container whose data.pkl holds the payload
    else:
        with open(path, "wb") as f:
            pickle.dump(state, f)


@pytest.mark.parametrize("torch_format", [True, False])
def test_crafted_checkpoint_is_refused_and_its_code_never_runs(
    tmp_path: Path, torch_format: bool
) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "checkpoint.pt"
    _crafted_checkpoint(ckpt, marker, torch_format)
    # the attack is live: an unsafe loader runs the payload
    if torch_format:
        torch.load(ckpt, weights_only=False)
    else:
        with open(ckpt, "rb") as f:
            pickle.load(f)
    assert marker.read_text() == "pwned"
    marker.unlink()
    # veil's loader refuses it, and the payload does not run
    with pytest.raises(DataError, match="refusing to load"):
        safe_load(ckpt)
    assert not marker.exists()
    # the same through load_model (a crafted model.pt in a run directory)
    run = tmp_path / "run"
    run.mkdir()
    os.replace(ckpt, run / "model.pt")
    with pytest.raises(DataError, match="refusing to load"):
        load_model(run, model=nn.Linear(3, 1))
    assert not marker.exists()


def test_model_pt_is_a_plain_state_dict_and_load_model_rebuilds(tmp_path: Path) -> None:
    model = build_model("mlp", (8,), 3, (5,), seed=1)
    trained = flat_params(model) + 1.0  # "after training": different from the model's weights
    builder = {"name": "mlp", "input_shape": [8], "n_classes": 3, "hidden": [5]}
    path = save_model(model, tmp_path, params=trained, builder=builder)
    state = torch.load(path, weights_only=True)  # what a PyTorch user does
    assert set(state) == set(model.state_dict()) and all(
        isinstance(v, torch.Tensor) for v in state.values())
    fresh = MLP(8, 3, (5,))
    fresh.load_state_dict(state)
    assert torch.equal(flat_params(fresh), trained)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, MLP) and not loaded.training
    assert torch.equal(flat_params(loaded), trained)
    assert not torch.equal(flat_params(model), trained)  # save_model left the model alone
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["class"] == "veil.models.zoo.MLP" and meta["n_parameters"] == trained.numel()


class _Mine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.1), nn.Linear(6, 2))
        self.norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.norm(x))


def test_own_model_needs_an_instance_and_mismatches_are_named(tmp_path: Path) -> None:
    save_model(_Mine(), tmp_path)
    with pytest.raises(ConfigError, match=r"your own model class .*_Mine"):
        load_model(tmp_path)
    assert isinstance(load_model(tmp_path, model=_Mine()), _Mine)
    with pytest.raises(DataError, match=r"does not fit Linear.*Missing key"):
        load_model(tmp_path, model=nn.Linear(4, 2))
    assert set(load_state_dict(tmp_path / "model.pt")) == set(_Mine().state_dict())


def test_older_flat_params_files_and_corrupt_files(tmp_path: Path) -> None:
    model = MLP(4, 2, (3,))
    torch.save({"params": flat_params(model) * 2, "config": {"x": 1}}, tmp_path / "model.pt")
    loaded = load_model(tmp_path, model=MLP(4, 2, (3,)))
    assert torch.equal(flat_params(loaded), flat_params(model) * 2)
    (tmp_path / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="not a readable torch file|refusing"):
        load_model(tmp_path, model=MLP(4, 2, (3,)))
    with pytest.raises(DataError, match="no model.pt"):
        load_model(tmp_path / "nowhere")


def test_top_level_load_model(tmp_path: Path) -> None:
    import veil

    save_model(MLP(4, 2, (3,)), tmp_path, builder={"name": "mlp", "input_shape": [4],
                                                   "n_classes": 2, "hidden": [3]})
    assert isinstance(veil.load_model(tmp_path), MLP)
