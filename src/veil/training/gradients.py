"""Gradient sources: what a local step descends along, per site, vectorised.

* :class:`PlainGradients` — the gradient of each site's minibatch mean loss at its own
  parameters: the linear-chain fast path (:mod:`veil.training.chain`) where the model
  allows it, else ``torch.func.vmap`` over ``functional_call`` and one autograd backward
  of the summed site losses (sites are independent, so that is the stack of per-site
  gradients).
* :class:`ClippedNoisedGradients` — DP-SGD's gradient (Abadi et al. 2016): per-example
  gradients clipped to L2 norm ``C`` (:class:`~veil.training.clipping.PerExampleClipper`,
  ghost norms), summed, plus ``N(0, σ² C² I)`` from the site's own CSPRNG stream, divided by
  the schedule's *expected* batch size (Opacus' convention). Its :meth:`step_event` is the
  ``Gaussian(σ)`` one step spends; the schedule composes it over the round.

A source is opened for one round (:meth:`GradientSource.open`) and returns a
:class:`StepGradients` callable; all round state (noise streams, denominators) lives in
that callable, never on the source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import numpy as np
import torch
from dp_accounting import dp_event as dpe
from torch import nn
from torch.func import functional_call, vmap

from veil.errors import ConfigError, LocalError
from veil.training.chain import chain_gradients, linear_chain
from veil.training.clipping import PerExampleClipper
from veil.training.data import per_example_loss
from veil.training.dropout import DropoutPlan
from veil.training.noise import gaussian_noise
from veil.training.schedule import Batches, RoundSites

__all__ = [
    "GradientSource",
    "StepGradients",
    "PlainGradients",
    "ClippedNoisedGradients",
    "param_layout",
    "views",
]


Layout = tuple[list[str], list[torch.Size], list[int]]


def param_layout(model: nn.Module) -> Layout:
    """Names, shapes and sizes of the model's parameters (``named_parameters`` order)."""
    named = list(model.named_parameters())
    return [n for n, _ in named], [p.shape for _, p in named], [p.numel() for _, p in named]


def views(flat: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """Per-parameter views ``(n, *shape)`` into stacked flat parameters ``(n, d)``."""
    n = flat.shape[0]
    out = {}
    i = 0
    for name, shape, k in zip(*layout):
        out[name] = flat[:, i : i + k].view(n, *shape)
        i += k
    return out


class StepGradients(Protocol):
    """One round's gradient function at a group of sites."""

    #: whether it accepts the shared ``(d,)`` global vector while no site has moved
    shared_ok: bool

    def __call__(
        self,
        params: torch.Tensor,
        xb: torch.Tensor,
        yb: torch.Tensor,
        mb: torch.Tensor,
        step: int,
        out: torch.Tensor,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """``scale`` x the step's gradient per site, ``(n, d)`` (written into ``out``)."""
        ...


class GradientSource(Protocol):
    """Where a trainer's step direction comes from."""

    @property
    def fast_path(self) -> bool:
        """Whether the linear-chain fast path is in use."""
        ...

    def open(self, sites: RoundSites, batches: Batches) -> StepGradients:
        """Set up one round at ``sites`` with their ``batches``."""
        ...

    def step_event(self, n: int) -> dpe.DpEvent | None:
        """The DP event one step spends at a site of ``n`` examples (``None``: not private)."""
        ...


class PlainGradients:
    """Gradient of each site's masked minibatch mean loss at its own parameters.

    Args:
        model: the architecture (its parameter values are not used).
        task: ``"classification"`` or ``"regression"``.
        fast: allow the linear-chain fast path (``False`` forces the generic path).
    """

    def __init__(self, model: nn.Module, task: str, fast: bool = True) -> None:
        self.model = model
        self.task = task
        self.layout = param_layout(model)
        self.names, self.shapes, self.numels = self.layout
        self.dim = sum(self.numels)
        self.dropout = DropoutPlan(model)  # per-site seeded masks (none without Dropout)
        fast = fast and not self.dropout
        self.chain = linear_chain(model, self.names, self.numels) if fast else None
        self._forward = vmap(self._forward_one)
        self._forward_masked = vmap(self._forward_one_masked)
        self._scratch: dict[int, torch.Tensor] = {}

    @property
    def fast_path(self) -> bool:
        """Whether gradients come from the linear-chain fast path."""
        return self.chain is not None

    def _forward_one(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x,))

    def _forward_one_masked(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, masks: list[torch.Tensor]
    ) -> torch.Tensor:
        self.dropout.use(masks)  # this site's dropout masks, applied by the layers' hooks
        return self._forward_one(params, x)

    def step_event(self, n: int) -> None:
        """Plain gradients spend no privacy."""
        return None

    def open(self, sites: RoundSites, batches: Batches) -> StepGradients:
        """The round's gradient function (stateless across rounds)."""
        return _Plain(self, sites)

    def generic(
        self,
        params: torch.Tensor,
        xb: torch.Tensor,
        yb: torch.Tensor,
        mb: torch.Tensor,
        masks: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-site gradients by autograd over stacked parameters ``(n, d)`` → ``(n, d)``;
        ``masks``: each dropout layer's per-site masks (:class:`DropoutPlan`)."""
        n = params.shape[0]
        leaves = {k: v.detach().requires_grad_(True) for k, v in views(params, self.layout).items()}
        if masks is None:
            out = self._forward(leaves, xb)
        else:
            with self.dropout.applied():
                out = self._forward_masked(leaves, xb, masks)
        b = yb.shape[1]
        losses = per_example_loss(
            out.reshape(n * b, *out.shape[2:]), yb.reshape(-1), self.task
        ).view(n, b)
        total = ((losses * mb).sum(dim=1) / mb.sum(dim=1).clamp(min=1.0)).sum()
        grads = torch.autograd.grad(total, [leaves[k] for k in self.names])
        return torch.cat([g.reshape(n, -1) for g in grads], dim=1)


class _Plain:
    def __init__(self, src: PlainGradients, sites: RoundSites) -> None:
        self.src = src
        self.sites = sites
        self.shared_ok = src.chain is not None

    def __call__(
        self,
        params: torch.Tensor,
        xb: torch.Tensor,
        yb: torch.Tensor,
        mb: torch.Tensor,
        step: int,
        out: torch.Tensor,
        scale: float = 1.0,
    ) -> torch.Tensor:
        s = self.src
        if s.chain is not None and (xb.dim() == 3 or s.chain[0].kind == "flatten"):
            return chain_gradients(s.chain, s.task, params, xb, yb, mb, out, s._scratch, scale)
        masks = None
        if s.dropout:
            st = self.sites
            masks = s.dropout.masks(xb[0, 0], st.seed, st.round, st.ids, step, xb.shape[1])
        g = s.generic(params, xb, yb, mb, masks)
        return g if scale == 1.0 else g.mul_(scale)


class ClippedNoisedGradients:
    """DP-SGD's step: clipped per-example gradients, summed, noised, over the expected batch.

    Args:
        model: the architecture.
        task: ``"classification"`` or ``"regression"``.
        noise_multiplier: σ for every site, or ``{site size: σ}`` (per-site calibration).
        max_grad_norm: per-example clip bound C.
        engine: per-example clipping engine (``"auto"``, ``"ghost"``, ``"vmap"``).
        label: the privacy stream the noise is drawn from.

    Raises:
        ConfigError: impossible parameters.
    """

    def __init__(
        self,
        model: nn.Module,
        task: str,
        noise_multiplier: float | Mapping[int, float],
        max_grad_norm: float,
        engine: str = "auto",
        label: str = "dpsgd/noise",
    ) -> None:
        if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise ConfigError(
                f"must be > 0, got {max_grad_norm}", key="privacy.sample_level.max_grad_norm"
            )
        sig = (
            noise_multiplier.values()
            if isinstance(noise_multiplier, Mapping)
            else [noise_multiplier]
        )
        if any(not (math.isfinite(s) and s >= 0) for s in sig):
            raise ConfigError(
                "must be finite and >= 0", key="privacy.sample_level.noise_multiplier"
            )
        self.model = model
        self.layout = param_layout(model)
        self.names, self.shapes, self.numels = self.layout
        self.dim = sum(self.numels)
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = float(max_grad_norm)
        self.label = label
        self.clipper = PerExampleClipper(model, self.names, task, engine)

    @property
    def fast_path(self) -> bool:
        """DP-SGD has its own per-example engines (see ``clipper.engine``)."""
        return False

    def sigma(self, n: int) -> float:
        """Noise multiplier used at a site holding ``n`` examples.

        Raises:
            LocalError: per-site noise was calibrated without this site size.
        """
        if isinstance(self.noise_multiplier, Mapping):
            if int(n) not in self.noise_multiplier:
                raise LocalError(f"no noise multiplier calibrated for a site of {n} examples")
            return float(self.noise_multiplier[int(n)])
        return float(self.noise_multiplier)

    def step_event(self, n: int) -> dpe.DpEvent:
        """``Gaussian(σ)``: one step's sum of clipped gradients has L2 sensitivity C."""
        return dpe.GaussianDpEvent(self.sigma(n))

    def open(self, sites: RoundSites, batches: Batches) -> StepGradients:
        """Noise streams, σ and denominators of the round at ``sites``.

        Raises:
            ConfigError: no privacy streams, or a schedule without expected batch sizes.
        """
        if sites.streams is None:
            raise ConfigError("DP-SGD noise needs the sites' privacy streams")
        if batches.expected is None:
            raise ConfigError(
                "DP-SGD divides by the expected batch size: use a Poisson schedule"
            )
        return _Noised(
            self,
            [sites.streams.stream(self.label, sites.round, int(s)) for s in sites.ids],
            [self.sigma(int(n)) for n in sites.sizes],
            torch.tensor(batches.expected, dtype=torch.float32),
            batches.active,
        )


class _Noised:
    shared_ok = False

    def __init__(
        self,
        src: ClippedNoisedGradients,
        noise: list,
        sigma: list[float],
        denom: torch.Tensor,
        active: np.ndarray,
    ) -> None:
        self.src, self.noise, self.sigma, self.denom, self.active = (
            src, noise, sigma, denom, active
        )
        self._buf = torch.empty(src.dim, dtype=torch.float32)

    def __call__(
        self,
        params: torch.Tensor,
        xb: torch.Tensor,
        yb: torch.Tensor,
        mb: torch.Tensor,
        step: int,
        out: torch.Tensor,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """``(Σ_i c_i g_i + σ C ξ) / (q n)`` per site; no noise for sites past their steps."""
        s = self.src
        sums, _ = s.clipper.clipped_sum(views(params, s.layout), xb, yb, mb, s.max_grad_norm)
        n = yb.shape[0]
        g = torch.cat([sums[k].reshape(n, -1) for k in s.names], dim=1)
        for i in range(n):
            if self.active[step, i] and self.sigma[i] > 0:
                gaussian_noise(self.noise[i], s.dim, out=self._buf)
                g[i].add_(self._buf, alpha=self.sigma[i] * s.max_grad_norm)
        g.div_(self.denom.view(n, 1))
        return g if scale == 1.0 else g.mul_(scale)
