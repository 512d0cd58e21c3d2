"""DP-SGD at every site, vectorised across sites (sample-level differential privacy).

Each round, a site with ``n`` examples runs ``T = epochs · round(1/q)`` steps of
DP-SGD (Abadi et al. 2016) from the global model:

1. **Poisson sampling**: every example joins the step's batch independently with
   probability ``q`` (``q = min(1, B/n)`` for an expected batch ``B``, or a configured
   rate). Batches vary in size; an empty batch still takes a (pure noise) step.
2. **Per-example clipping** to L2 norm ``C`` (:class:`~veil.privacy.clipping.PerExampleClipper`,
   ghost norms: no per-example gradient is materialised for Linear layers).
3. **Gaussian noise** ``N(0, σ² C² I)`` added to the clipped sum, divided by the
   *expected* batch size ``q n`` (Opacus' convention), then the SGD / momentum update.

Sampling and noise come from :class:`veil.crypto.prg.SecureRng` streams, one per
(round, site): fresh OS-keyed streams by default, or HKDF-derived from the run seed when
``secure_rng=False`` (reproducible; each site's result is independent of the cohort).
The round's DP event per site is
``SelfComposed(PoissonSampled(q, Gaussian(σ)), T)`` (:meth:`DPSGDTrainer.round_event`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from dp_accounting import dp_event as dpe
from torch import nn

from veil.crypto.prg import SecureRng
from veil.errors import ConfigError, LocalError
from veil.federation.local import LocalConfig, SiteData, VectorisedTrainer
from veil.privacy.accounting import dpsgd_round_event
from veil.privacy.clipping import PerExampleClipper

__all__ = ["DPSGDTrainer", "gaussian_noise", "poisson_batches"]


def gaussian_noise(rng: SecureRng, n: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` standard normal samples from a CSPRNG stream (Box–Muller in float64).

    Two 53-bit uniforms per pair of samples, computed in torch for speed. The result is
    written into ``out`` (any float dtype, ``n`` elements) when given, else float64.
    """
    m = (n + 1) // 2
    w = torch.frombuffer(bytearray(rng.bytes(16 * m)), dtype=torch.int64)
    u = (
        w.bitwise_right_shift_(11)
        .bitwise_and_((1 << 53) - 1)
        .to(torch.float64)
        .add_(0.5)
        .mul_(2.0**-53)
        .view(2, m)
    )
    r = u[0].log_().mul_(-2.0).sqrt_()
    th = u[1].mul_(2.0 * math.pi)
    if out is None:
        out = torch.empty(n, dtype=torch.float64)
    out[:m].copy_(torch.cos(th).mul_(r))
    out[m:].copy_(torch.sin(th).mul_(r)[: n - m])
    return out


def poisson_batches(
    rngs: list[SecureRng], sizes: np.ndarray, rates: np.ndarray, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-sampled batches for each site, padded to the largest batch drawn.

    Site *i* draws ``steps[i]`` batches over its ``sizes[i]`` examples, each example
    included independently with probability ``rates[i]`` (uniforms from ``rngs[i]``).

    Returns:
        ``(idx, mask)`` of shape ``(max steps, n_sites, width)``; steps past a site's own
        count have an all-zero mask.
    """
    picks: list[list[np.ndarray]] = []
    width = 1
    for rng, n, q, t in zip(rngs, sizes, rates, steps):
        sel = rng.uniform((int(t), int(n))) < q
        rows = [np.flatnonzero(r) for r in sel]
        width = max([width] + [len(r) for r in rows])
        picks.append(rows)
    tmax = int(max(steps)) if len(steps) else 0
    idx = np.zeros((tmax, len(sizes), width), dtype=np.int64)
    mask = np.zeros((tmax, len(sizes), width), dtype=np.float32)
    for i, rows in enumerate(picks):
        for t, r in enumerate(rows):
            idx[t, i, : len(r)] = r
            mask[t, i, : len(r)] = 1.0
    return idx, mask


@dataclass
class _RoundState:
    noise: list[SecureRng]
    sigma: list[float]  # noise multiplier per site
    denom: torch.Tensor  # (n,) expected batch size per site
    steps: np.ndarray  # (n,) steps per site


class DPSGDTrainer(VectorisedTrainer):
    """Vectorised DP-SGD: Poisson batches, per-example clipping, Gaussian noise.

    Args:
        model: the architecture.
        task: ``"classification"`` or ``"regression"``.
        config: local hyper-parameters (``lr``, ``momentum``, ``weight_decay``; ``epochs``
            unless ``epochs`` is given here; ``batch_size`` is replaced by Poisson sampling).
        noise_multiplier: σ for every site, or ``{site size: σ}`` (per-site calibration).
        max_grad_norm: per-example clip bound C.
        expected_batch_size: B; site rate ``q = min(1, B/n)`` (unless ``sampling_rate``).
        sampling_rate: the same Poisson rate at every site.
        epochs: expected passes per round (default ``config.epochs``).
        secure_rng: fresh CSPRNG streams (True) or seed-derived reproducible ones.
        engine: per-example clipping engine (``"auto"``, ``"ghost"``, ``"vmap"``).
        chunk: sites per vectorised call.

    Raises:
        ConfigError: impossible parameters.
    """

    def __init__(
        self,
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
    ) -> None:
        super().__init__(model, task, config, chunk)
        if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise ConfigError(
                f"must be > 0, got {max_grad_norm}", key="privacy.sample_level.max_grad_norm"
            )
        if expected_batch_size < 1:
            raise ConfigError("must be >= 1", key="privacy.sample_level.expected_batch_size")
        if sampling_rate is not None and not 0 < sampling_rate <= 1:
            raise ConfigError("must be in (0, 1]", key="privacy.sample_level.sampling_rate")
        sig = (
            noise_multiplier.values()
            if isinstance(noise_multiplier, Mapping)
            else [noise_multiplier]
        )
        if any(not (math.isfinite(s) and s >= 0) for s in sig):
            raise ConfigError(
                "must be finite and >= 0", key="privacy.sample_level.noise_multiplier"
            )
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = float(max_grad_norm)
        self.expected_batch_size = int(expected_batch_size)
        self.fixed_rate = sampling_rate
        self.epochs = int(epochs or config.epochs)
        self.secure_rng = secure_rng
        self.clipper = PerExampleClipper(model, self.names, task, engine)
        self._round: _RoundState | None = None

    # -- the sampling / accounting plan --------------------------------------------------
    def sampling_rate(self, n: int) -> float:
        """Poisson rate q for a site holding ``n`` examples."""
        if self.fixed_rate is not None:
            return float(self.fixed_rate)
        return min(1.0, self.expected_batch_size / int(n))

    def steps(self, n: int) -> int:
        """DP-SGD steps per round for a site holding ``n`` examples."""
        return self.epochs * max(1, round(1.0 / self.sampling_rate(n)))

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

    def round_event(self, n: int) -> dpe.DpEvent:
        """DP event one round spends at a site holding ``n`` examples."""
        return dpsgd_round_event(self.sigma(n), self.sampling_rate(n), self.steps(n))

    def _stream(self, kind: str, seed: int, round: int, site: int) -> SecureRng:
        if self.secure_rng:
            return SecureRng.fresh()
        return SecureRng.from_seed(seed, f"dpsgd/{kind}/r{round}/s{site}")

    # -- overrides -----------------------------------------------------------------------
    def schedule(
        self, sizes: np.ndarray, site_ids: np.ndarray, seed: int, round: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Poisson-sampled batches ``(steps, n_sites, width)`` (see :func:`poisson_batches`)."""
        rngs = [self._stream("sample", seed, round, int(s)) for s in site_ids]
        rates = np.array([self.sampling_rate(int(n)) for n in sizes])
        steps = np.array([self.steps(int(n)) for n in sizes])
        return poisson_batches(rngs, np.asarray(sizes), rates, steps)

    def site_gradients(
        self,
        params: dict[str, torch.Tensor],
        xb: torch.Tensor,
        yb: torch.Tensor,
        mb: torch.Tensor,
        site_ids: np.ndarray,
        step: int,
        round: int,
    ) -> dict[str, torch.Tensor]:
        """Noised mean of clipped per-example gradients, per site (see :meth:`dp_gradients`)."""
        g = self.dp_gradients(params, xb, yb, mb, step)
        return _views(g, self.names, self.shapes, self.numels)

    def dp_gradients(
        self,
        params: dict[str, torch.Tensor],
        xb: torch.Tensor,
        yb: torch.Tensor,
        mb: torch.Tensor,
        step: int,
    ) -> torch.Tensor:
        """``(Σ_i c_i g_i + σ C ξ) / (q n)`` per site, flat ``(n_sites, d)``.

        ``ξ ~ N(0, I)`` comes from the site's noise stream of this round; sites past
        their own number of steps get no noise (their step is masked out).

        Raises:
            LocalError: called outside :meth:`train` (no round streams set up).
        """
        st = self._round
        if st is None:
            raise LocalError("DPSGDTrainer gradients are only valid inside train()")
        sums, _ = self.clipper.clipped_sum(params, xb, yb, mb, self.max_grad_norm)
        n = yb.shape[0]
        g = torch.cat([sums[k].reshape(n, -1) for k in self.names], dim=1)
        buf = torch.empty(self.dim, dtype=torch.float32)
        for i in range(n):
            sigma = st.sigma[i]
            if step < st.steps[i] and sigma > 0:
                gaussian_noise(st.noise[i], self.dim, out=buf)
                g[i].add_(buf, alpha=sigma * self.max_grad_norm)
        return g.div_(st.denom.view(n, 1))

    def open_round(self, ids: np.ndarray, sizes: np.ndarray, seed: int, round: int) -> np.ndarray:
        """Set up the round's noise streams for sites ``ids`` (done by :meth:`train`).

        Returns:
            Each site's number of DP-SGD steps this round.
        """
        steps = np.array([self.steps(int(s)) for s in sizes])
        self._round = _RoundState(
            noise=[self._stream("noise", seed, round, int(s)) for s in ids],
            sigma=[self.sigma(int(s)) for s in sizes],
            denom=torch.tensor(
                [self.sampling_rate(int(s)) * int(s) for s in sizes], dtype=torch.float32
            ),
            steps=steps,
        )
        return steps

    def close_round(self) -> None:
        """Drop the round's noise streams."""
        self._round = None

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter views ``(n, *shape)`` into stacked flat parameters ``(n, d)``."""
        return _views(flat, self.names, self.shapes, self.numels)

    def _train_chunk(
        self, global_flat: torch.Tensor, data: SiteData, ids: np.ndarray, seed: int, round: int
    ) -> torch.Tensor:
        c = self.config
        n = len(ids)
        sizes = data.sizes[ids]
        idx, mask = self.schedule(sizes, ids, seed, round)
        steps = self.open_round(ids, sizes, seed, round)
        try:
            params = global_flat.unsqueeze(0).expand(n, -1).clone()
            views = _views(params, self.names, self.shapes, self.numels)
            bufs: torch.Tensor | None = None
            tid = torch.from_numpy(ids)
            xs, ys = data.x[tid], data.y[tid]
            rows = torch.arange(n).unsqueeze(1)
            for t in range(idx.shape[0]):
                it = torch.from_numpy(idx[t])
                mb = torch.from_numpy(mask[t])
                g = self.dp_gradients(views, xs[rows, it], ys[rows, it], mb, t)
                if c.weight_decay:
                    g.add_(params, alpha=c.weight_decay)
                active = t < steps  # empty Poisson batches still take a (noise) step
                a = None if active.all() else torch.from_numpy(active).view(n, 1)
                if c.momentum:
                    if bufs is None:
                        bufs = g.clone()
                    elif a is None:
                        bufs.mul_(c.momentum).add_(g)
                    else:
                        bufs = torch.where(a, bufs * c.momentum + g, bufs)
                    g = bufs
                if a is None:
                    params.add_(g, alpha=-c.lr)
                else:
                    params.addcmul_(a.to(g.dtype), g, value=-c.lr)
            return params.sub_(global_flat)
        finally:
            self.close_round()


def _views(
    flat: torch.Tensor, names: list[str], shapes: list[torch.Size], numels: list[int]
) -> dict[str, torch.Tensor]:
    """Per-parameter views ``(n, *shape)`` into a flat ``(n, d)`` tensor."""
    n = flat.shape[0]
    out = {}
    i = 0
    for name, shape, k in zip(names, shapes, numels):
        out[name] = flat[:, i : i + k].view(n, *shape)
        i += k
    return out
