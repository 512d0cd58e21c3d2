"""A run's model as PyTorch users expect it, and loading that never unpickles code.

``model.pt`` is a plain ``state_dict`` (parameter and buffer names → tensors), loadable
with ``torch.load(path, weights_only=True)``; ``model.json`` next to it names the model
class, how to rebuild veil's own models, the parameter count and every tensor's shape.

Example:
    >>> import torch, veil
    >>> model = veil.load_model("runs/digits")                      # doctest: +SKIP
    >>> state = torch.load("runs/digits/model.pt", weights_only=True)  # doctest: +SKIP
    >>> model = veil.load_model("runs/mine", model=MyNet())          # doctest: +SKIP

Everything veil loads with torch goes through :func:`safe_load` (``weights_only=True``):
a crafted ``.pt`` file whose pickle would run code is refused with a
:class:`~veil.errors.DataError`, and its code never runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from veil.errors import ConfigError, DataError, LocalError

__all__ = ["MODEL_FILE", "MODEL_META", "safe_load", "save_model", "load_state_dict",
           "load_model", "model_info"]

MODEL_FILE = "model.pt"
MODEL_META = "model.json"
_FORMAT = "veil-state-dict-1"


def safe_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with typed errors.

    Only tensors and plain containers (dict, list, tuple, str, numbers) can come out; a
    pickle that would build any other object (and so could run code) is refused.

    Raises:
        DataError: the file is missing, unreadable, or holds more than plain data.
    """
    import pickle
    import warnings

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p} not found")
    try:
        with warnings.catch_warnings():  # "pickle protocol 4" notes on files torch did not write
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"refusing to load {p}: it holds Python objects other than tensors and plain data, "
            f"which could run code when unpickled ({first[:200]}). Only load files veil wrote; "
            "re-create it, or start the run afresh"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        msg = f"{p} is not a readable torch file ({type(e).__name__}: {e})"
        raise DataError(msg[:400]) from None


def model_info(model: nn.Module, builder: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``model.json`` (and a run record) says about a model: class, parameter count,
    tensor shapes, and ``builder`` (the :func:`veil.models.build_model` arguments) if any."""
    cls = type(model)
    state = model.state_dict()
    return {
        "format": _FORMAT,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "n_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "tensors": {k: list(v.shape) for k, v in state.items()},
        "builder": dict(builder) if builder is not None else None,
    }


def save_model(
    model: nn.Module,
    run_dir: str | os.PathLike[str],
    params: torch.Tensor | None = None,
    builder: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``run_dir/model.pt`` (a state_dict) and ``run_dir/model.json``, atomically.

    Args:
        model: the model (its architecture; its weights unless ``params`` is given).
        run_dir: the run directory.
        params: flat parameter vector (``named_parameters`` order) to store instead of the
            model's current weights; the model itself is not changed.
        builder: ``build_model`` arguments (``name``, ``input_shape``, ``n_classes``,
            ``hidden``) so :func:`load_model` can rebuild it without the user's code.

    Returns:
        The path of ``model.pt``.

    Raises:
        veil.errors.OutputError: the run directory cannot be written.
        veil.errors.LocalError: ``params`` does not fit the model.
    """
    import copy

    from veil._fs import atomic_write, write_json_atomic
    from veil.models.params import load_flat_params

    target = model
    if params is not None:
        target = copy.deepcopy(model)
        load_flat_params(target, params.detach().reshape(-1))
    state = {k: v.detach().cpu().clone() for k, v in target.state_dict().items()}
    d = Path(run_dir)
    with atomic_write(d / MODEL_FILE) as tmp:
        torch.save(state, tmp)
    write_json_atomic(d / MODEL_META, model_info(target, builder))
    return d / MODEL_FILE


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state_dict in a ``model.pt`` (via :func:`safe_load`).

    Raises:
        DataError: unreadable, unsafe, or not a mapping of names to tensors.
    """
    return _as_state_dict(safe_load(path), Path(path))


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and obj and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        return dict(obj)
    raise DataError(f"{path} is not a state_dict (a mapping of names to tensors)")


def _read_json(p: Path) -> dict[str, Any]:
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{p} is not readable JSON: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{p} must hold a JSON object")
    return obj


def _rebuild(run_dir: Path, meta: dict[str, Any]) -> nn.Module:
    from veil.models.zoo import build_model

    b = meta.get("builder")
    if not isinstance(b, dict):
        raise ConfigError(
            f"the run in {run_dir} trained your own model class {meta.get('class', '?')}; pass "
            "an instance of it: veil.load_model(run_dir, model=YourModel(...))"
        )
    shape = b.get("input_shape")
    if not isinstance(shape, Sequence) or not isinstance(b.get("n_classes"), int):
        raise DataError(f"{run_dir / MODEL_META}: builder needs input_shape and n_classes")
    return build_model(str(b.get("name", "mlp")), tuple(int(s) for s in shape),
                       int(b["n_classes"]), tuple(b.get("hidden", (128, 128))))


def load_model(run_dir: str | os.PathLike[str], model: nn.Module | None = None) -> nn.Module:
    """The trained model of a run, in eval mode.

    Args:
        run_dir: the run directory (holds ``model.pt`` and ``model.json``).
        model: an instance of the model class to load the weights into. Needed when the run
            trained your own ``nn.Module``; veil's own models are rebuilt from ``model.json``.

    Raises:
        DataError: missing, unsafe or unreadable files, or weights that do not fit the model
            (naming the missing, unexpected or mis-shaped tensors).
        ConfigError: the run used your own model class and ``model`` was not given.
    """
    from veil.models.params import load_flat_params

    d = Path(run_dir)
    path = d / MODEL_FILE
    if not path.is_file():
        raise DataError(f"no {MODEL_FILE} in {d}: is it a finished veil run directory?")
    meta = _read_json(d / MODEL_META) if (d / MODEL_META).is_file() else {}
    if model is None:
        if not meta:
            raise ConfigError(
                f"{d} has no {MODEL_META} saying how to rebuild the model; pass an instance: "
                "veil.load_model(run_dir, model=YourModel(...))"
            )
        model = _rebuild(d, meta)
    obj = safe_load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("params"), torch.Tensor):
        try:  # older runs: {"params": flat vector, "config": ...}
            load_flat_params(model, obj["params"].reshape(-1).to(torch.float32))
        except LocalError as e:
            raise DataError(f"{path} does not fit {type(model).__name__}: {e}") from None
        return model.eval()
    state = _as_state_dict(obj, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise DataError(f"{path} does not fit {type(model).__name__}: {msg[:600]}") from None
    return model.eval()
