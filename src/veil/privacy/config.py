"""The ``[privacy]`` section of a run config (owned by the privacy layer).

DP is off unless ``enabled = true``. Two independent knobs, each with its own guarantee
at the same target ``(target_epsilon, delta)``:

* ``sample_level``: DP-SGD inside every site (Poisson-sampled minibatches, per-example
  clipping, Gaussian noise). Protects one training example of one site.
* ``client_level``: DP-FedAvg at the server (each site's update clipped, Gaussian noise
  added to the sum, optionally adaptive clipping). Protects everything one site holds.

A noise multiplier left unset is calibrated from the target with dp-accounting.

Example (TOML)::

    [privacy]
    enabled = true
    target_epsilon = 3.0
    delta = 1e-5
    accountant = "pld"

    [privacy.client_level]
    enabled = true
    clip_norm = 0.5
    adaptive = { target_quantile = 0.5, lr = 0.2 }
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["PrivacyConfig", "SampleLevelConfig", "ClientLevelConfig", "AdaptiveClipConfig"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampleLevelConfig(_Frozen):
    """DP-SGD at every site.

    Attributes:
        enabled: turn sample-level DP-SGD on.
        noise_multiplier: σ (noise std / ``max_grad_norm``); ``None`` = calibrate from the
            target (per site when sites have different sampling rates).
        max_grad_norm: per-example clipping bound C.
        expected_batch_size: expected Poisson batch B; a site with n examples samples each
            one with probability ``min(1, B / n)``. Ignored when ``sampling_rate`` is set.
        sampling_rate: the same Poisson rate q at every site (expected batch ``q n``).
        epochs: expected passes over a site's data per round; steps per round are
            ``epochs * round(1 / q)``. ``None`` = the run's ``local.epochs``.
    """

    enabled: bool = False
    noise_multiplier: float | None = Field(default=None, ge=0.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    expected_batch_size: int = Field(default=64, ge=1)
    sampling_rate: float | None = Field(default=None, gt=0.0, le=1.0)
    epochs: int | None = Field(default=None, ge=1)


class AdaptiveClipConfig(_Frozen):
    """Quantile-based adaptive clipping (Andrew et al. 2021, geometric update).

    After each round ``C ← C · exp(-lr · (b̂ - target_quantile))`` where ``b̂`` is the
    noised fraction of sites whose update norm was ≤ C. The count is summed with the
    updates and noised with std ``count_stddev`` (default: expected cohort / 20, the
    paper's choice); its privacy cost is composed into every round's DP event.

    Attributes:
        enabled: turn adaptive clipping on (``client_level.clip_norm`` is the start value).
        target_quantile: γ, the fraction of updates to leave unclipped.
        lr: η_C, the learning rate of the geometric update.
        count_stddev: σ_b, std of the noise on the unclipped count.
    """

    enabled: bool = True
    target_quantile: float = Field(default=0.5, gt=0.0, lt=1.0)
    lr: float = Field(default=0.2, gt=0.0)
    count_stddev: float | None = Field(default=None, gt=0.0)


class ClientLevelConfig(_Frozen):
    """Client-level DP (DP-FedAvg) at the server.

    Attributes:
        enabled: turn client-level DP on.
        noise_multiplier: z (noise std on the sum / clip norm); ``None`` = calibrate.
        clip_norm: L2 bound on each site's update (the initial value when adaptive).
        adaptive: adaptive clipping settings (``None`` = fixed clip norm).
        mechanism: ``"central"`` (the server adds Gaussian noise to the sum) or
            ``"distributed"`` (each site adds discrete Gaussian noise before the secure sum,
            so the server never holds an un-noised sum; needs aggregation.summation =
            'secagg' or 'ckks' and a fixed-size cohort).
    """

    enabled: bool = False
    noise_multiplier: float | None = Field(default=None, ge=0.0)
    clip_norm: float = Field(default=1.0, gt=0.0)
    adaptive: AdaptiveClipConfig | None = None
    mechanism: Literal["central", "distributed"] = "central"

    @model_validator(mode="after")
    def _distributed_is_fixed_clip(self) -> ClientLevelConfig:
        if self.mechanism == "distributed" and self.adaptive is not None and self.adaptive.enabled:
            raise ValueError("adaptive clipping is only available with mechanism = 'central'")
        return self


class PrivacyConfig(_Frozen):
    """Differential privacy settings for a run (off by default).

    Attributes:
        enabled: master switch; when false nothing below is used.
        target_epsilon: ε budget, applied to each enabled level separately.
        delta: δ of the (ε, δ) guarantee; keep it below 1 / (population size).
        accountant: ``"pld"`` (tighter, slower) or ``"rdp"``; both from dp-accounting.
        over_budget: ``"refuse"`` (a planned schedule over budget is refused before round
            0) or ``"stop"`` (the run starts and stops cleanly when the budget is reached).
        secure_rng: DP noise and Poisson sampling from a fresh OS-keyed CSPRNG. ``False``
            derives them from the run seed (reproducible; recorded in the run's record —
            not for real deployments).
        record_cohorts: keep each round's cohort, survivors and per-site bytes in the
            record. ``False`` (default): a client-level DP run records only counts, so
            cohort amplification holds against a reader of the record. ``True``: the
            client-level ε is charged *without* amplification (the reader knows who took
            part) and the record says so.
        debug_unnoised_statistics: keep un-noised per-round diagnostics (``clip/*``,
            ``quantize/clipped_fraction``) in the record. They are functions of private
            updates with no noise: the run is marked **not private** and its ε not valid.
        sample_level: DP-SGD at the sites.
        client_level: DP-FedAvg at the server.
    """

    enabled: bool = False
    target_epsilon: float = Field(default=3.0, gt=0.0)
    delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    accountant: Literal["rdp", "pld"] = "rdp"
    over_budget: Literal["refuse", "stop"] = "refuse"
    secure_rng: bool = True
    record_cohorts: bool = False
    debug_unnoised_statistics: bool = False
    sample_level: SampleLevelConfig = SampleLevelConfig()
    client_level: ClientLevelConfig = ClientLevelConfig()

    @model_validator(mode="after")
    def _check(self) -> PrivacyConfig:
        if not math.isfinite(self.target_epsilon):
            raise ValueError(
                "privacy.target_epsilon must be finite; for a non-private run set "
                "privacy.enabled = false"
            )
        if self.enabled and not (self.sample_level.enabled or self.client_level.enabled):
            raise ValueError(
                "privacy.enabled is true but neither privacy.sample_level.enabled nor "
                "privacy.client_level.enabled is; turn one on (or set privacy.enabled = false)"
            )
        return self

    @property
    def sample_on(self) -> bool:
        """Whether sample-level DP-SGD is in effect."""
        return self.enabled and self.sample_level.enabled

    @property
    def client_on(self) -> bool:
        """Whether client-level DP-FedAvg is in effect."""
        return self.enabled and self.client_level.enabled

    @property
    def amplify(self) -> bool:
        """Whether client-level ε may claim cohort amplification (cohorts not recorded)."""
        return not self.record_cohorts

    @property
    def hide_cohorts(self) -> bool:
        """Whether the run's record must not list who took part (client-level DP)."""
        return self.client_on and not self.record_cohorts

    @property
    def private(self) -> bool:
        """Whether the run's ε is a valid claim (DP on, no un-noised debug statistics)."""
        return self.enabled and not self.debug_unnoised_statistics
