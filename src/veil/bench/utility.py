"""`veil bench utility`: accuracy of DP training on Fashion-MNIST at (ε = 3, δ = 1e-5).

Two settings, both with sample-level DP-SGD (Poisson sampling, per-example clipping,
Gaussian noise from :class:`veil.crypto.prg.SecureRng`), σ calibrated with
:func:`veil.privacy.calibrate_noise` on dp-accounting's PLD accountant, ε read back from a
:class:`veil.privacy.PrivacyLedger` (one entity per site):

* ``central``: one site holding all 60k training images (central DP-SGD).
  Target ≥ 90.0% (Tramèr & Boneh 2021: 89.7% with ScatterNet + linear at ε = 3).
* ``federated``: 10 sites, Dirichlet(α = 0.5) label skew, DP-SGD at every site, i.e. each
  site's own ε ≤ 3 for its own examples, whatever the other sites or the server do.
  Target ≥ 88%.

Model: a linear softmax head on fixed features: ScatterNet scattering with kymatio-style
Morlet filters (:mod:`veil.bench._features`, 81 × 7 × 7, per-example group normalisation;
data-independent) whose 81 channels are then standardised with a *DP* per-channel mean
and variance (:func:`dp_channel_norm`: two Gaussian releases per site, noise multiplier
8, composed with DP-SGD in the calibration of σ and in the ledger), concatenated with the
784 pixels normalised per image (4,753 features).

Training: a loop of its own (not the federation runtime; same accounting). Each step,
every site Poisson-samples its examples with the same rate ``q``, clips each example's
gradient to ``C`` (exact per-example norms for a linear head: ``‖p − y‖ · ‖(x, 1)‖``),
sums them and adds ``N(0, σ²C²)`` noise; the server averages the sites' noisy means
weighted by size (FedSGD, McMahan et al. 2017; with one site this *is* DP-SGD) and takes
a heavy-ball momentum step. Each site's DP event is
``SelfComposed(PoissonSampled(q, Gaussian(σ)), T)`` — the same event a site of the
federation runtime spends — so its ε does not depend on label skew or on the other
sites. The reported model is an exponential moving average of the iterates
(post-processing, free in privacy).

Noise streams are ``SecureRng.from_seed`` (a reproducible CSPRNG stream, recorded as
such): fine for a benchmark, a deployment uses fresh OS-keyed streams.

Hyper-parameters come from an *accounted* random search (:func:`tuned_dp_linear`, on
:mod:`veil.privacy.tuning`): a random number of trials ``K`` (truncated negative binomial,
mean 2), each a fresh DP normalisation + DP-SGD run with a configuration drawn from a
small grid, scored by its noisy training accuracy; only the best trial is released and
the whole search, ``RepeatAndSelect`` on the RDP accountant, is inside ε = 3. ``K`` is not
recorded (the bound needs it secret). But, like every noise stream here, ``K`` comes from
a stream seeded by the public ``SEED``, and the JSON's total ``seconds`` tells it roughly:
this benchmark's ε describes the mechanism run with fresh OS-keyed randomness (what
``veil tune`` uses), not the benchmark's own published artefacts. The grid
itself was written after earlier, unaccounted looks at a held-out split of the training
set (the docs say so). For comparison the fixed configurations those looks picked are
also run (``reference_fixed_config``: PLD accountant, selection not accounted). The test
set is used once per run, for the reported numbers.

``quick=True`` is a smoke test: 3k training / 1k test images, 10 epochs, well below the
targets (20x fewer examples at the same ε means far more noise per example).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from dp_accounting import dp_event as dpe

from veil.aggregation.plain import l2_clip
from veil.bench._features import CHANNELS, GROUPS, N_FEATURES, scatter_features
from veil.bench._machine import machine_info
from veil.crypto.prg import SecureRng
from veil.errors import ConfigError
from veil.privacy import PrivacyLedger
from veil.privacy.accounting import calibrate_noise, dpsgd_round_event
from veil.privacy.tuning import TuningPlan, tune
from veil.training import gaussian_noise

__all__ = [
    "run",
    "features",
    "DPLinearConfig",
    "DPNormConfig",
    "dp_channel_norm",
    "train_dp_linear",
    "trial_event",
    "tuned_dp_linear",
]

EPSILON, DELTA, ACCOUNTANT, SEED = 3.0, 1e-5, "pld", 0


@dataclass(frozen=True)
class DPLinearConfig:
    """Hyper-parameters of DP-SGD / DP-FedSGD for a linear head.

    Attributes:
        rate: Poisson sampling rate ``q`` at every site.
        epochs: expected passes over the data; ``T = round(epochs / q)`` steps.
        clip: per-example clip bound ``C``.
        lr: server step size.
        momentum: heavy-ball momentum.
        ema: decay of the exponential moving average of the iterates (0: last iterate).
    """

    rate: float = 0.16384
    epochs: int = 40
    clip: float = 0.1
    lr: float = 24.0
    momentum: float = 0.9
    ema: float = 0.98

    @property
    def steps(self) -> int:
        """Number of DP-SGD steps ``T``."""
        return max(1, round(self.epochs / self.rate))


def features(x: np.ndarray) -> np.ndarray:
    """Scattering features and per-image-normalised pixels of ``(N, 1, 28, 28)`` images.

    Data-independent: every statistic is computed within one image.
    """
    px = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    px = (px - px.mean(1, keepdims=True)) / (px.std(1, keepdims=True) + 1e-5)
    return np.concatenate([scatter_features(x), px], axis=1)


@dataclass(frozen=True)
class DPNormConfig:
    """DP per-channel normalisation of the scattering block (two Gaussian releases).

    Attributes:
        noise: noise multiplier of each release (sum of clipped vectors + ``N(0, (zC)²)``).
        clip_mean: L2 bound ``C`` on an example's vector of per-channel means.
        clip_var: L2 bound ``C`` on its vector of per-channel mean squared deviations.

    The default bounds follow from the per-example group normalisation, not from data:
    each group of ``g = 3`` channels × 49 cells has mean 0 and variance ≤ 1, so its
    channels' ``Σ (mean² + variance) ≤ g``; over the 27 groups ``‖means‖ ≤ √(27 g) = 9``
    (never clipped), and with a zero centre ``‖mean squared deviations‖ ≤ g √27 ≈ 15.6``.
    """

    noise: float = 8.0
    clip_mean: float = math.sqrt(GROUPS * (CHANNELS // GROUPS))
    clip_var: float = (CHANNELS // GROUPS) * math.sqrt(GROUPS)

    def events(self) -> list[dpe.DpEvent]:
        """The two releases' DP events (add/remove one example: sensitivity ``C`` each)."""
        return [dpe.GaussianDpEvent(self.noise), dpe.GaussianDpEvent(self.noise)]


def dp_channel_norm(
    x: np.ndarray, parts: list[np.ndarray], cfg: DPNormConfig, rngs: list[SecureRng]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance of the scattering block, released with Gaussian noise.

    Every site releases the noisy sum of its examples' clipped per-channel means, the
    server adds the sites' sums and divides by the (public) total size; then the same for
    the mean squared deviation from that mean. A site's own noise covers its own
    examples, so each site spends :meth:`DPNormConfig.events` whatever the others do.

    Args:
        x: ``(N, d)`` features whose first ``81 · 49`` columns are the scattering block.
        parts: each site's example indices.
        cfg: clip bounds and noise.
        rngs: one noise stream per site.

    Returns:
        ``(mean, var)``, each ``(81,)`` float32 (``var`` floored at 1e-6).

    Raises:
        ConfigError: invalid clip bounds or noise, or one stream per site missing.
    """
    if not (cfg.noise > 0 and cfg.clip_mean > 0 and cfg.clip_var > 0) or len(rngs) != len(parts):
        raise ConfigError(
            f"invalid DP normalisation {cfg} for {len(parts)} sites", key="bench.utility"
        )
    n, cells = sum(len(p) for p in parts), N_FEATURES // CHANNELS

    def block(idx: np.ndarray) -> np.ndarray:
        return np.asarray(x[idx, :N_FEATURES], dtype=np.float64).reshape(len(idx), CHANNELS, cells)

    def release(stat: Callable[[np.ndarray], np.ndarray], clip: float) -> np.ndarray:
        total = np.zeros(CHANNELS)
        for idx, rng in zip(parts, rngs):
            for a in range(0, len(idx), 5_000):  # chunks: memory only
                total += l2_clip(stat(block(idx[a : a + 5_000])), clip)[0].sum(0)
            total += rng.normal(CHANNELS, std=cfg.noise * clip)
        return total / n

    mean = release(lambda b: b.mean(-1), cfg.clip_mean)
    var = release(lambda b: ((b - mean[None, :, None]) ** 2).mean(-1), cfg.clip_var)
    return mean.astype(np.float32), np.maximum(var, 1e-6).astype(np.float32)


def _normalise(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Standardise the scattering block of ``x`` in place with released statistics."""
    cells = N_FEATURES // CHANNELS
    inv = (1.0 / np.sqrt(var + 1e-5)).astype(np.float32)
    for a in range(0, len(x), 5_000):
        b = x[a : a + 5_000, :N_FEATURES].reshape(-1, CHANNELS, cells)
        x[a : a + 5_000, :N_FEATURES] = ((b - mean[None, :, None]) * inv[None, :, None]).reshape(
            len(b), -1
        )
    return x


def train_dp_linear(
    x: np.ndarray,
    y: np.ndarray,
    parts: list[np.ndarray],
    cfg: DPLinearConfig,
    *,
    epsilon: float = EPSILON,
    delta: float = DELTA,
    seed: int = SEED,
    n_classes: int = 10,
    spent: list[dpe.DpEvent] | None = None,
    noise_multiplier: float | None = None,
    label: str = "",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """DP-SGD (one site) or DP-FedSGD (several) for a softmax linear head.

    Args:
        x: ``(N, d)`` float32 features; ``y``: ``(N,)`` labels.
        parts: each site's example indices (disjoint).
        cfg: hyper-parameters.
        epsilon, delta: per-site budget; σ is calibrated so each site meets it.
        seed: seed of the (reproducible) sampling and noise streams.
        n_classes: number of classes.
        spent: events every site already spent on this data (e.g. the DP feature
            normalisation): composed before DP-SGD in the calibration and the ledger.
        noise_multiplier: σ calibrated by the caller (e.g. for a whole accounted
            search, :mod:`veil.privacy.tuning`); then nothing is calibrated or spent
            here and ``info`` carries no ε: the caller's ledger holds it.
        label: distinguishes the sampling and noise streams of runs that share a seed
            (the trials of a search).

    Returns:
        ``(weights, info)``: EMA weights ``(n_classes, d + 1)`` (bias last) and the
        accounting: σ, steps, ε per site from the ledger.

    Raises:
        ConfigError: impossible hyper-parameters.
    """
    if noise_multiplier is not None and not noise_multiplier > 0:
        raise ConfigError(
            f"noise multiplier must be > 0, got {noise_multiplier}", key="bench.utility"
        )
    if not (0 < cfg.rate <= 1 and cfg.clip > 0 and cfg.lr > 0 and 0 <= cfg.ema < 1):
        raise ConfigError(f"invalid DP linear hyper-parameters {cfg}", key="bench.utility")
    q, steps, before = cfg.rate, cfg.steps, list(spent or [])

    def schedule(s: float) -> dpe.DpEvent:
        sgd = dpsgd_round_event(s, q, steps)
        return dpe.ComposedDpEvent([*before, sgd]) if before else sgd

    sigma = (
        calibrate_noise(schedule, epsilon, delta, ACCOUNTANT)
        if noise_multiplier is None
        else noise_multiplier
    )
    n, d = x.shape
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y)).long()
    norm = (xt * xt).sum(1).add_(1.0).sqrt_()  # ‖(x, 1)‖ per example
    w = torch.zeros(n_classes, d + 1)
    buf, avg, grad = torch.zeros_like(w), torch.zeros_like(w), torch.empty_like(w)
    noise = torch.empty(w.numel(), dtype=torch.float32)
    sites = [torch.from_numpy(np.asarray(p, dtype=np.int64)) for p in parts]
    sample = [
        SecureRng.from_seed(seed, f"bench/utility/sample{label}/s{i}") for i in range(len(parts))
    ]
    noisy = [
        SecureRng.from_seed(seed, f"bench/utility/noise{label}/s{i}") for i in range(len(parts))
    ]
    for t in range(steps):
        grad.zero_()
        for i, idx in enumerate(sites):
            sel = idx[torch.from_numpy(sample[i].uniform(len(idx)) < q)]
            xb = xt[sel]
            err = torch.softmax(xb @ w[:, :d].t() + w[:, d], dim=1)
            err[torch.arange(len(sel)), yt[sel]] -= 1.0  # ∂loss/∂logits = p − onehot(y)
            err.mul_((cfg.clip / (err.norm(dim=1) * norm[sel])).clamp_(max=1.0).unsqueeze(1))
            grad[:, :d].addmm_(err.t(), xb)
            grad[:, d].add_(err.sum(0))
            gaussian_noise(noisy[i], noise.numel(), out=noise)
            grad.add_(noise.view_as(grad), alpha=sigma * cfg.clip)
        grad.div_(q * n)  # size-weighted mean of the sites' noisy means Σ/(q n_i)
        buf.mul_(cfg.momentum).add_(grad)
        w.sub_(buf, alpha=cfg.lr)
        if t == 0:
            avg.copy_(w)
        else:
            avg.mul_(cfg.ema).add_(w, alpha=1.0 - cfg.ema)
    info: dict[str, Any] = {
        "noise_multiplier": round(sigma, 4),
        "steps": steps,
        "expected_batch_per_site": [round(q * len(p), 1) for p in parts],
        **asdict(cfg),
    }
    if noise_multiplier is not None:
        return avg, info
    ledger = PrivacyLedger(delta, ACCOUNTANT)
    for i in range(len(parts)):
        for event in before:
            ledger.spend(f"site{i}", event)
        ledger.spend(f"site{i}", dpsgd_round_event(sigma, q, steps))
    eps = [ledger.epsilon(f"site{i}") for i in range(len(parts))]
    info |= {
        "epsilon_spent_max": round(max(eps), 4),
        "epsilon_target": epsilon,
        "delta": delta,
        "accountant": ACCOUNTANT,
        "events_before_dpsgd": len(before),
    }
    return avg, info


NORM = DPNormConfig()
SCORE_NOISE = 50.0
"""Std of the Gaussian noise each site adds to its count of correct training predictions
(the trial's score; sensitivity 1 under add/remove one example)."""
TUNING = TuningPlan(mean_runs=2.0, shape=0.0)
TUNED_ACCOUNTANT = "rdp"  # dp-accounting's PLD accountant cannot compose RepeatAndSelect
CENTRAL_GRID = tuple(
    DPLinearConfig(lr=lr, ema=ema) for lr in (12.0, 24.0, 48.0) for ema in (0.95, 0.98)
)
# 10 sites: larger per-site batches (q = 0.5, 200 rounds).
FEDERATED_GRID = tuple(
    DPLinearConfig(rate=0.5, epochs=100, lr=lr, ema=ema)
    for lr in (3.0, 6.0, 12.0)
    for ema in (0.9, 0.95)
)


# The fixed configurations of earlier releases, chosen on a held-out split of the training
# set (the last 10k). That choice is *not* accounted; they are run as a reference only.
CENTRAL = DPLinearConfig(lr=24.0, ema=0.98)
FEDERATED = DPLinearConfig(rate=0.5, epochs=100, lr=6.0, ema=0.95)


def _normalise_and_train(
    x: np.ndarray,
    y: np.ndarray,
    parts: list[np.ndarray],
    cfg: DPLinearConfig,
    tag: str,
    seed: int = SEED,
    **train: Any,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """One DP run: release the channel statistics, normalise, DP-SGD.

    ``seed`` and ``tag`` name the run's noise streams (``""``: the fixed reference's);
    ``train`` goes to :func:`train_dp_linear`. Returns ``(w, mean, var, x_normalised,
    info)``.
    """
    rngs = [SecureRng.from_seed(seed, f"bench/utility/norm{tag}/s{j}") for j in range(len(parts))]
    mean, var = dp_channel_norm(x, parts, NORM, rngs)
    xn = _normalise(x.copy(), mean, var)
    w, info = train_dp_linear(xn, y, parts, cfg, seed=seed, label=tag, **train)
    return w, mean, var, xn, info


def _test_accuracy(
    w: torch.Tensor, mean: np.ndarray, var: np.ndarray, x: np.ndarray, y: np.ndarray
) -> float:
    """Accuracy on ``x`` normalised with the run's released statistics."""
    return float((_predict(w, _normalise(x.copy(), mean, var)) == y).mean())


def _fixed_reference(
    ftr: np.ndarray,
    ytr: np.ndarray,
    fte: np.ndarray,
    yte: np.ndarray,
    sites: list[np.ndarray],
    cfg: DPLinearConfig,
) -> dict[str, Any]:
    """One run of a fixed configuration on the PLD accountant (selection not accounted)."""
    w, mean, var, _, info = _normalise_and_train(ftr, ytr, sites, cfg, "", spent=NORM.events())
    acc = _test_accuracy(w, mean, var, fte, yte)
    return {
        "test_accuracy": round(acc, 4),
        "epsilon_spent_max": info["epsilon_spent_max"],
        "accountant": info["accountant"],
        "noise_multiplier": info["noise_multiplier"],
        "config": asdict(cfg),
        "selection": "chosen on a held-out split of the training set; not accounted",
    }


def trial_event(noise_multiplier: float, cfg: DPLinearConfig) -> dpe.DpEvent:
    """One trial's DP event at a site: DP normalisation, DP-SGD, the noisy score."""
    return dpe.ComposedDpEvent(
        [
            *NORM.events(),
            dpsgd_round_event(noise_multiplier, cfg.rate, cfg.steps),
            dpe.GaussianDpEvent(SCORE_NOISE),
        ]
    )


def _predict(w: torch.Tensor, x: np.ndarray) -> np.ndarray:
    out = np.empty(len(x), dtype=np.int64)
    for a in range(0, len(x), 10_000):
        xt = torch.from_numpy(x[a : a + 10_000])
        out[a : a + 10_000] = (xt @ w[:, :-1].t() + w[:, -1]).argmax(1).numpy()
    return out


def tuned_dp_linear(
    x: np.ndarray,
    y: np.ndarray,
    parts: list[np.ndarray],
    grid: Sequence[DPLinearConfig],
    *,
    plan: TuningPlan = TUNING,
    epsilon: float = EPSILON,
    delta: float = DELTA,
    seed: int = SEED,
    label: str = "run",
    progress: Callable[[int], None] | None = None,
) -> tuple[tuple[torch.Tensor, np.ndarray, np.ndarray], dict[str, Any]]:
    """Accounted random search over ``grid``: DP normalisation + DP-SGD per trial.

    Each trial (:func:`veil.privacy.tuning.tune`) draws a configuration from ``grid``,
    releases the DP channel statistics of ``x``'s scattering block, trains with
    :func:`train_dp_linear` on all of ``parts`` and scores itself by the noisy fraction
    of correct training predictions (each site adds ``N(0, SCORE_NOISE²)`` to its own
    count). σ is calibrated so that every site's whole search,
    ``plan.event(trial_event(σ))``, costs at most ``(epsilon, delta)`` on the RDP
    accountant; ε is read back from a ledger that spends exactly that event per site.

    Args:
        x: ``(N, d)`` raw features (:func:`features`); ``y``: labels.
        parts: each site's example indices.
        grid: candidate configurations; they differ only in ``lr``/``ema``/``momentum``/
            ``clip`` (every trial must be the same DP mechanism: same rate and steps).
        plan: the distribution of the number of trials.
        label: names the trials' noise streams.
        progress: called as ``progress(i)`` after trial ``i`` (never with ``K``).

    Returns:
        ``((weights, mean, var), info)``: the best trial's model and normalisation, and
        what may be released about the search (its configuration, ``K``, σ, ε).

    Raises:
        ConfigError: an empty grid, or candidates whose DP events differ.
    """
    if not grid or len({(c.rate, c.steps) for c in grid}) != 1:
        raise ConfigError(
            "tuning candidates must share the sampling rate and step count (one DP "
            "mechanism for every trial)",
            key="bench.utility",
        )
    sigma = calibrate_noise(
        lambda s: plan.event(trial_event(s, grid[0])), epsilon, delta, TUNED_ACCOUNTANT
    )
    n = len(y)

    def trial(cfg: DPLinearConfig, i: int) -> tuple[Any, float]:
        tag = f"/{label}/t{i}"
        w, mean, var, xn, _ = _normalise_and_train(
            x, y, parts, cfg, tag, noise_multiplier=sigma, seed=seed
        )
        right = _predict(w, xn) == np.asarray(y)
        del xn
        noisy = 0.0
        for j, idx in enumerate(parts):
            rng = SecureRng.from_seed(seed, f"bench/utility/score{tag}/s{j}")
            noisy += float(right[idx].sum()) + float(rng.normal(1, std=SCORE_NOISE)[0])
        return (w, mean, var), noisy / n

    best = tune(
        grid,
        trial,
        plan,
        SecureRng.from_seed(seed, f"bench/utility/tuning/{label}"),
        progress=progress,
    )
    ledger = PrivacyLedger(delta, TUNED_ACCOUNTANT)
    for j in range(len(parts)):
        ledger.spend(f"site{j}", plan.event(trial_event(sigma, grid[0])))
    eps = max(ledger.epsilon(f"site{j}") for j in range(len(parts)))
    cfg = best.candidate
    info = {
        "epsilon_spent_max": round(eps, 4),
        "epsilon_target": epsilon,
        "delta": delta,
        "accountant": TUNED_ACCOUNTANT,
        "noise_multiplier": round(sigma, 4),
        "steps": cfg.steps,
        "expected_batch_per_site": [round(cfg.rate * len(p), 1) for p in parts],
        "tuning": {
            "mean_trials": plan.mean_runs,
            "shape": plan.shape,
            "trials": "not released: the bound holds only while K stays secret",
            "grid_size": len(grid),
            "grid": [{"lr": c.lr, "ema": c.ema} for c in grid],
            "score": "noisy fraction of correct training predictions",
            "score_noise_std_per_site": SCORE_NOISE,
            "selected_score": round(best.score, 4),
        },
        "selected": asdict(cfg),
    }
    return best.output, info


def run(quick: bool = False) -> dict[str, Any]:
    """Fashion-MNIST at ε = 3, δ = 1e-5: central DP-SGD and 10 Dirichlet sites.

    Each setting's hyper-parameters come from an accounted random search
    (:func:`tuned_dp_linear`): the search's whole cost is inside ε = 3.

    Args:
        quick: 3k / 1k subset, 10 epochs (a smoke test); full mode: all 60k / 10k images.

    Raises:
        DataError: Fashion-MNIST is not installed (the message says how to get it).
    """
    from veil.data import load_fashion_mnist, partition

    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    t0 = time.perf_counter()
    try:
        ds = load_fashion_mnist()
        n = 3_000 if quick else len(ds.y_train)
        n_test = 1_000 if quick else len(ds.y_test)
        ytr, yte = np.asarray(ds.y_train[:n]), np.asarray(ds.y_test[:n_test])
        tf = time.perf_counter()
        ftr, fte = features(ds.x_train[:n]), features(ds.x_test[:n_test])
        feat_s = time.perf_counter() - tf
        parts = partition(ytr, 10, "dirichlet", alpha=0.5, seed=SEED)
        settings = {
            "central_dpsgd": (CENTRAL_GRID, CENTRAL, [np.arange(n)], 0.90),
            "federated_10_sites_dirichlet_0.5": (FEDERATED_GRID, FEDERATED, parts, 0.88),
        }
        out: dict[str, Any] = {}
        for name, (grid, fixed, sites, target) in settings.items():
            if quick:
                grid = tuple(DPLinearConfig(**{**asdict(c), "epochs": 10}) for c in grid)
                fixed = DPLinearConfig(**{**asdict(fixed), "epochs": 10})
            ts = time.perf_counter()

            def say(i: int, name: str = name, ts: float = ts) -> None:
                # progress only (stderr): no score and no K; the last line tells K, so
                # this stream is not part of the benchmark's published output
                print(
                    f"utility {name}: trial {i} done, {time.perf_counter() - ts:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )

            (w, mean, var), info = tuned_dp_linear(ftr, ytr, sites, grid, label=name, progress=say)
            acc = _test_accuracy(w, mean, var, fte, yte)
            out[name] = {
                "test_accuracy": round(acc, 4),
                "target": target,
                "met": acc >= target,
                "sites": len(sites),
                "site_sizes": [len(p) for p in sites],
                **info,
                "reference_fixed_config": _fixed_reference(ftr, ytr, fte, yte, sites, fixed),
            }
        return {
            "benchmark": "utility",
            "quick": quick,
            "dataset": f"fashion_mnist (train {n}, test {n_test})",
            "features": f"ScatterNet J=2 L=8, kymatio-style Morlet filters ({N_FEATURES}; "
            "per-image group norm, then DP per-channel normalisation) + pixels (784, "
            "per-image normalisation)",
            "dp_normalisation": {
                **asdict(NORM),
                "events_per_site": "2 x Gaussian per trial, inside the accounted search",
            },
            "model": "linear softmax head; EMA of iterates reported",
            "algorithm": "DP-SGD (1 site) / DP-FedSGD (10 sites, 1 local DP-SGD step per "
            "round, size-weighted mean, server momentum); own loop, veil accounting",
            "hyper_parameters": "accounted random search (Papernot & Steinke 2022; "
            "veil.privacy.tuning): K ~ truncated negative binomial, best trial released, "
            "whole search inside epsilon",
            "noise_rng": "SecureRng.from_seed (reproducible CSPRNG stream, benchmark only)",
            "feature_seconds": round(feat_s, 1),
            **out,
            "targets_met": {
                "central_dpsgd_90.0pct": out["central_dpsgd"]["met"],
                "federated_10_sites_88pct": out["federated_10_sites_dirichlet_0.5"]["met"],
            },
            "seconds": round(time.perf_counter() - t0, 1),
            "torch_threads": torch.get_num_threads(),
            "machine": machine_info(),
        }
    finally:
        torch.set_num_threads(threads)
