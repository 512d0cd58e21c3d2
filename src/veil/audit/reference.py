"""LiRA with reference models trained like the target: same config, through the federation.

An adversary who knows how the target was trained (sites, partition scheme, local
training, aggregation, DP — everything in the run's config except the private data and
the privacy randomness) trains reference models the same way. veil does exactly that:
every reference model is a federated run of the target's own :class:`RunConfig`, built
with :func:`veil.federation.build.build_federation` and run to the end, on a subset of
the data pool. Only the name, the seed (partition, init, batches of each reference are
its own) and the output directory change; canaries and the audit log are switched off.

Design (Carlini et al. 2022, with references *independent of the target*):

1. The pool is the target's training set (members) plus held-out examples
   (non-members). Reference ``j`` trains on a subset of the pool drawn from the audit's
   seed alone, never from the target's membership: each example is IN for exactly
   ``round(f·k)`` of the ``k`` references, where ``f`` is the target's training fraction
   of the pool (so references see as many examples as the target did), clamped so that
   every example has at least 2 IN and 2 OUT references.
2. φ = logit-scaled confidence of each pool example on each reference and the target.
3. Online LiRA (IN and OUT Gaussians) and offline LiRA (OUT only) scores, pooled
   variance (:func:`veil.audit.mia.lira_scores`).
4. AUC and TPR at 0.1 % / 1 % FPR (only where the non-members resolve it) with bootstrap
   intervals (:func:`veil.audit.mia.evaluate_attack`).

With no membership signal (a target trained without the members) members and
non-members are exchangeable under this design, so the AUC is 0.5 in expectation; the
paired design where every example is IN for exactly half of the models *including the
target* is not (it biases the AUC below 0.5).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from veil.audit.mia import evaluate_attack, lira_scores, logit_confidence, model_outputs
from veil.data import Dataset
from veil.errors import ConfigError

__all__ = ["LiraSetup", "lira_for_run", "lira_like_target", "reference_masks", "train_references"]


def reference_masks(n_refs: int, n_pool: int, fraction: float, seed: int) -> np.ndarray:
    """``(n_refs, n_pool)`` IN masks: each example IN for exactly ``round(f·k)`` references.

    Args:
        n_refs: k, the number of reference models (at least 4).
        n_pool: examples in the pool.
        fraction: f, the target's training set as a fraction of the pool.
        seed: the audit's seed (independent of the target's membership).

    Raises:
        ConfigError: fewer than 4 references or a fraction outside (0, 1).
    """
    if n_refs < 4:
        raise ConfigError("LiRA needs at least 4 reference models", key="audit.lira_refs")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"training fraction {fraction} must be in (0, 1)")
    n_in = int(np.clip(round(fraction * n_refs), 2, n_refs - 2))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x11FA]))
    ranks = rng.random((n_refs, n_pool)).argsort(axis=0).argsort(axis=0)
    return ranks < n_in


@dataclass(frozen=True)
class LiraSetup:
    """How the references are trained.

    Attributes:
        config: the target's run config (a :class:`veil.federation.config.RunConfig`).
        n_refs: number of reference models.
        seed: audit seed (reference membership, partitions, inits).
        model: the target's architecture when the run trained the user's own
            ``nn.Module`` (each reference trains a freshly initialised copy); ``None``:
            the config's model.
    """

    config: Any
    n_refs: int = 8
    seed: int = 0
    model: Any = None


def _fresh_copy(template: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``template`` with every layer re-initialised from ``seed``."""
    import copy

    m = copy.deepcopy(template)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for mod in m.modules():
            reset = getattr(mod, "reset_parameters", None)
            if callable(reset):
                reset()
    return m


def _ref_config(cfg: Any, j: int, seed: int, out_dir: str) -> Any:
    from veil.federation.config import RunConfig

    raw = cfg.model_dump(mode="json")
    raw["name"] = f"lira-ref-{j}"
    raw["seed"] = int(np.random.SeedSequence([int(seed), 0x5EF, j]).generate_state(1)[0] % 2**31)
    raw["output_dir"] = out_dir
    raw.setdefault("data", {})["limit"] = None
    raw["audit"] = {**raw.get("audit", {}), "canaries": 0, "log": False}
    fed = raw.setdefault("federation", {})
    fed["eval_every"] = max(int(raw.get("rounds", 1)), 1)  # evaluate once, at the end
    return RunConfig.model_validate(raw)


def _train_one(cfg: Any, ds: Dataset, template: torch.nn.Module | None = None) -> torch.nn.Module:
    """One federated run of ``cfg`` on ``ds`` (of a fresh copy of ``template`` if given);
    the model with its final parameters."""
    from veil.federation.build import build_federation
    from veil.models import build_model
    from veil.models.params import load_flat_params

    if template is not None:
        model = _fresh_copy(template, cfg.seed)
        fed = build_federation(cfg, dataset=ds, model=model)
        res = fed.run()
        load_flat_params(model, torch.as_tensor(res.params).reshape(-1).to(torch.float32))
        return model.eval()
    fed = build_federation(cfg, dataset=ds)
    res = fed.run()
    model = build_model(
        cfg.model.name, ds.input_shape, ds.n_classes, cfg.model.hidden, seed=cfg.seed
    )
    load_flat_params(model, torch.as_tensor(res.params).reshape(-1).to(torch.float32))
    return model.eval()


def train_references(
    setup: LiraSetup, pool: Dataset, masks: np.ndarray, eval_x: np.ndarray | None = None
) -> np.ndarray:
    """Train one reference per row of ``masks`` like the target; their logits on the pool.

    Args:
        setup: the target's config, number of references and the audit seed.
        pool: the data pool in ``x_train``/``y_train`` (its test split is used for the
            references' final evaluation only).
        masks: ``(k, n_pool)`` IN masks (:func:`reference_masks`).
        eval_x: inputs to compute logits on (default: the pool).

    Returns:
        ``(k, n, classes)`` logits.

    Raises:
        ConfigError: the config cannot train on a reference's subset (e.g. too few
            examples for its sites).
    """
    x = pool.x_train if eval_x is None else eval_x
    out = []
    with tempfile.TemporaryDirectory(prefix="veil-lira-") as tmp:
        for j, mask in enumerate(np.asarray(masks, dtype=bool)):
            cfg = _ref_config(setup.config, j, setup.seed, tmp)
            ds = Dataset(
                pool.name, pool.x_train[mask], pool.y_train[mask], pool.x_test, pool.y_test,
                pool.task, pool.n_classes,
            )
            out.append(model_outputs(_train_one(cfg, ds, setup.model), x))
    return np.stack(out)


def lira_like_target(
    target: torch.nn.Module,
    setup: LiraSetup,
    x: np.ndarray,
    y: np.ndarray,
    member: np.ndarray,
    name: str = "pool",
    n_classes: int | None = None,
) -> dict[str, Any]:
    """Online and offline LiRA against ``target`` with references trained like it.

    Args:
        target: the released model.
        setup: the target's config, reference count and audit seed.
        x, y: the pool (target's training examples and held-out examples).
        member: True where the example was in the target's training set.
        name: data set name (for the references' Dataset).
        n_classes: number of classes (default ``max(y) + 1``).

    Returns:
        ``{"online": AttackResult dict, "offline": ..., "n_refs", "n_in_per_example",
        "reference_training"}``.

    Raises:
        ConfigError: fewer than 4 references, or no members / non-members.
    """
    mem = np.asarray(member, dtype=bool)
    if mem.all() or not mem.any():
        raise ConfigError("LiRA needs both members and non-members in the pool")
    y = np.asarray(y, dtype=np.int64)
    k = int(n_classes if n_classes is not None else int(y.max()) + 1)
    masks = reference_masks(setup.n_refs, len(y), float(mem.mean()), setup.seed)
    held = ~mem
    pool = Dataset(name, np.asarray(x), y, np.asarray(x)[held], y[held], "classification", k)
    phi_refs = logit_confidence(train_references(setup, pool, masks), y)
    phi_t = logit_confidence(model_outputs(target, x), y)
    cfg = setup.config
    how = (
        f"federated runs of the target's config ({cfg.data.sites} sites, "
        f"{cfg.data.partition} partition, {cfg.rounds} rounds, pipeline and privacy "
        "settings as the target), each on its own subset of the pool independent of the "
        "target's membership"
    )
    return {
        "online": evaluate_attack(
            "lira-online", lira_scores(phi_t, phi_refs, masks, True), mem, seed=setup.seed
        ).to_dict(),
        "offline": evaluate_attack(
            "lira-offline", lira_scores(phi_t, phi_refs, masks, False), mem, seed=setup.seed
        ).to_dict(),
        "n_refs": int(setup.n_refs),
        "n_in_per_example": int(masks[:, 0].sum()),
        "reference_training": how,
    }


def lira_for_run(
    target: torch.nn.Module,
    record: dict[str, Any],
    ds: Dataset,
    x_train: np.ndarray,
    y_train: np.ndarray,
    n_refs: int,
    seed: int,
    own_model: bool = False,
) -> dict[str, Any]:
    """LiRA for ``veil audit``: the run's training set (members) vs its test set.

    Args:
        target: the run's released model.
        record: the run's ``record.json`` (its ``config`` is the references' config).
        ds: the run's data set (its test split: the non-members).
        x_train, y_train: what the target trained on (canaries inserted if any).
        n_refs: reference models.
        seed: audit seed.
        own_model: the run trained the user's own module: references train fresh copies
            of ``target``'s architecture instead of the config's model.

    Raises:
        DataError: the record's config cannot be read back.
        ConfigError: see :func:`lira_like_target`.
    """
    from pydantic import ValidationError

    from veil.errors import DataError
    from veil.federation.config import RunConfig

    try:
        cfg = RunConfig.model_validate(record.get("config") or {})
    except ValidationError as e:
        raise DataError(f"the run's recorded config cannot be read back: {e}") from None
    x = np.concatenate([x_train, ds.x_test])
    y = np.concatenate([y_train, ds.y_test])
    member = np.r_[np.ones(len(y_train), bool), np.zeros(len(ds.y_test), bool)]
    return lira_like_target(
        target, LiraSetup(cfg, n_refs, seed, target if own_model else None), x, y, member,
        ds.name, ds.n_classes
    )
