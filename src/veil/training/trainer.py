"""The local trainer: a sampling schedule, a gradient source and one SGD step, vectorised.

Every site in a round runs its local steps from the same global model. Instead of
looping over sites, the trainer stacks the sites' copies of the parameters in one
``(n_sites, d)`` tensor and computes all their gradients in one call. Sites with less data
are padded and masked: a masked example contributes nothing, and a site whose schedule is
over stops updating (its momentum too), so each site's update is exactly what it would be
if it trained alone (:func:`~veil.training.reference.train_site_reference`, which the tests
compare against).

DP-SGD is the same loop with other parts (:func:`dpsgd_trainer`): Poisson sampling
(:class:`~veil.training.schedule.PoissonBatches`) and clipped, noised gradients
(:class:`~veil.training.gradients.ClippedNoisedGradients`). What spends privacy reports
it: :meth:`Trainer.round_event` composes the gradient source's step event with the
schedule.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from dp_accounting import dp_event as dpe
from torch import nn

from veil.errors import ConfigError
from veil.training.config import LocalConfig
from veil.training.data import SiteData
from veil.training.gradients import (
    ClippedNoisedGradients,
    GradientSource,
    PlainGradients,
    param_layout,
)
from veil.training.modules import check_trainable
from veil.training.schedule import PoissonBatches, RoundSites, Schedule, ShuffledBatches
from veil.training.streams import FreshStreams, PrivacyStreams, SeededStreams

__all__ = ["Trainer", "dpsgd_trainer"]


class Trainer:
    """Local SGD for many sites at once; each site's result equals training it alone.

    Args:
        model: the architecture (its current parameters are not used; the global vector is).
        task: ``"classification"`` or ``"regression"``.
        config: local hyper-parameters (lr, momentum, weight decay; epochs and batch size
            for the default schedule).
        schedule: the sampling schedule (default: shuffled minibatches from ``config``).
        gradients: the gradient source (default: :class:`PlainGradients`).
        chunk: train at most this many sites per vectorised call (bounds memory).
        fast: allow the linear-chain fast path of the default gradient source.
        secure_rng: privacy streams when :meth:`train` is given none: fresh (True) or
            derived from the run seed (False, reproducible).

    Raises:
        ConfigError: impossible hyper-parameters or task, or a layer the vectorised
            trainer cannot train (BatchNorm; Dropout under DP-SGD; :func:`check_trainable`).
    """

    def __init__(
        self,
        model: nn.Module,
        task: str,
        config: LocalConfig,
        schedule: Schedule | None = None,
        gradients: GradientSource | None = None,
        chunk: int = 256,
        fast: bool = True,
        secure_rng: bool = True,
    ) -> None:
        if config.batch_size < 1 or config.epochs < 1 or not config.lr > 0:
            raise ConfigError("local batch_size and epochs must be >= 1 and lr > 0", key="local")
        if config.momentum < 0 or config.weight_decay < 0:
            raise ConfigError("local momentum and weight_decay must be >= 0", key="local")
        if task not in ("classification", "regression"):
            raise ConfigError(f"unknown task {task!r}; use 'classification' or 'regression'")
        if chunk < 1:
            raise ConfigError(f"chunk must be >= 1, got {chunk}", key="local.chunk")
        # BatchNorm (and Dropout under DP-SGD): a typed error naming the layer
        check_trainable(model, dropout=gradients is None or isinstance(gradients, PlainGradients))
        self.model = model
        self.task = task
        self.config = config
        self.chunk = chunk
        self.secure_rng = secure_rng
        self.schedule: Schedule = schedule or ShuffledBatches(config.batch_size, config.epochs)
        self.gradients: GradientSource = gradients or PlainGradients(model, task, fast)
        self.names, self.shapes, self.numels = param_layout(model)
        self.dim = sum(self.numels)

    @property
    def randomness(self) -> dict[str, object]:
        """The ML randomness a run record names: the dropout masks' layers and seeding."""
        drop = getattr(self.gradients, "dropout", None)
        return {"dropout": drop.describe()} if drop else {}

    @property
    def fast_path(self) -> bool:
        """Whether gradients come from the linear-chain fast path."""
        return self.gradients.fast_path

    @property
    def private(self) -> bool:
        """Whether a round spends (sample-level) privacy."""
        return self.gradients.step_event(1) is not None

    def round_event(self, n: int) -> dpe.DpEvent | None:
        """The DP event one round spends at a site of ``n`` examples (``None``: not private)."""
        step = self.gradients.step_event(n)
        return None if step is None else self.schedule.compose(step, n)

    def steps(self, n: int) -> int:
        """Local steps per round at a site holding ``n`` examples."""
        return self.schedule.steps(n)

    def train(
        self,
        global_flat: torch.Tensor,
        data: SiteData,
        site_ids: np.ndarray,
        seed: int,
        round: int,
        streams: PrivacyStreams | None = None,
    ) -> torch.Tensor:
        """Train the given sites from ``global_flat``; return their updates ``(n, d)``.

        An update is the site's final parameters minus the global parameters.

        Args:
            global_flat: the global parameters.
            data: the sites' stacked data; ``site_ids`` index its rows.
            site_ids: the sites to train.
            seed: run seed (batch shuffles).
            round: round number.
            streams: the sites' privacy randomness (default per ``secure_rng``).

        Raises:
            ConfigError: ``global_flat`` does not have the model's number of parameters.
        """
        site_ids = np.asarray(site_ids, dtype=np.int64)
        global_flat = global_flat.detach().to(torch.float32).reshape(-1)
        if global_flat.numel() != self.dim:
            raise ConfigError(
                f"global parameters have {global_flat.numel()} entries, the model {self.dim}"
            )
        if streams is None:
            streams = FreshStreams() if self.secure_rng else SeededStreams(seed)
        outs = []
        for s in range(0, len(site_ids), self.chunk):
            ids = site_ids[s : s + self.chunk]
            outs.append(self._train_chunk(global_flat, data, ids, seed, round, streams))
        if len(outs) == 1:
            return outs[0]
        return torch.cat(outs, dim=0) if outs else torch.zeros(0, self.dim)

    def _train_chunk(
        self,
        global_flat: torch.Tensor,
        data: SiteData,
        ids: np.ndarray,
        seed: int,
        round: int,
        streams: PrivacyStreams,
    ) -> torch.Tensor:
        c = self.config
        n = len(ids)
        sizes = data.sizes[ids]
        sites = RoundSites(ids, sizes, seed, round, streams)
        batches = self.schedule.plan(sites)
        grad = self.gradients.open(sites, batches)
        idx, mask, active = batches.idx, batches.mask, batches.active
        steps = idx.shape[0]
        m = data.x.shape[1]
        x_all = data.x.reshape(data.x.shape[0] * m, *data.x.shape[2:])
        y_all = data.y.reshape(-1)
        gidx = torch.from_numpy((ids[None, :, None] * m + idx).reshape(steps, -1))
        out = torch.empty(n, self.dim)  # the gradients, one buffer reused at every step

        def batch(t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            xb = x_all.index_select(0, gidx[t]).view(n, -1, *x_all.shape[1:])
            yb = y_all.index_select(0, gidx[t]).view(n, -1)
            return xb, yb, torch.from_numpy(mask[t])

        if grad.shared_ok and steps == 1 and not c.weight_decay and not c.momentum:
            # one plain SGD step from the global parameters: the update is -lr * gradient
            return grad(global_flat, *batch(0), 0, out, -c.lr)
        params: torch.Tensor | None = None  # None while every site holds global_flat
        bufs: torch.Tensor | None = None
        for t in range(steps):
            if params is None and not grad.shared_ok:
                params = global_flat.unsqueeze(0).expand(n, -1).clone()
            g = grad(global_flat if params is None else params, *batch(t), t, out)
            a = None if active[t].all() else torch.from_numpy(active[t]).view(n, 1)
            if c.weight_decay:
                g.add_(global_flat if params is None else params, alpha=c.weight_decay)
            if c.momentum:
                if bufs is None:  # step 0: every site is active, buffer = gradient
                    bufs = g.clone()
                elif a is None:
                    bufs.mul_(c.momentum).add_(g)
                else:
                    bufs = torch.where(a, bufs * c.momentum + g, bufs)
                g = bufs
            if params is None:
                if t == steps - 1:  # one step: the update is -lr * gradient
                    return g.mul_(-c.lr) if g is not bufs and g is out else g * -c.lr
                params = torch.add(global_flat, g, alpha=-c.lr)
            elif a is None:
                params.add_(g, alpha=-c.lr)
            else:
                params.addcmul_(a.to(g.dtype), g, value=-c.lr)
        if params is None:  # a schedule with no steps: nobody moved
            return torch.zeros(n, self.dim)
        return params.sub_(global_flat)


def dpsgd_trainer(
    model: nn.Module,
    task: str,
    config: LocalConfig,
    *,
    noise_multiplier: float | Mapping[int, float],
    max_grad_norm: float,
    expected_batch_size: int = 64,
    sampling_rate: float | None = None,
    epochs: int | None = None,
    secure_rng: bool = True,
    engine: str = "auto",
    chunk: int = 256,
) -> Trainer:
    """DP-SGD at every site (sample-level DP): the :class:`Trainer` with DP parts.

    Each round, a site with ``n`` examples runs ``T = epochs · round(1/q)`` steps: Poisson
    batches with rate ``q = min(1, B/n)`` (or ``sampling_rate``), per-example clipping to
    ``max_grad_norm``, Gaussian noise with multiplier σ (one value, or ``{site size: σ}``)
    from the site's privacy streams, the mean over the expected batch ``q n``, then the
    SGD / momentum / weight-decay step of ``config``. The round's event per site is
    ``SelfComposed(PoissonSampled(q, Gaussian(σ)), T)`` (:meth:`Trainer.round_event`).

    Raises:
        ConfigError: impossible parameters.
    """
    schedule = PoissonBatches(expected_batch_size, sampling_rate, int(epochs or config.epochs))
    grads = ClippedNoisedGradients(model, task, noise_multiplier, max_grad_norm, engine)
    return Trainer(model, task, config, schedule, grads, chunk=chunk, secure_rng=secure_rng)
