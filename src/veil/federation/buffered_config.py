"""The ``[federation.buffered]`` section: buffered asynchronous aggregation (FedBuff).

Used when ``federation.mode = "buffered"`` (docs/async.md). Example (TOML)::

    [federation]
    mode = "buffered"
    cohort_size = 20            # sites training at once (the concurrency)

    [federation.buffered]
    buffer_size = 5             # K: the server applies an update every K contributions
    max_staleness = 10          # staler contributions are dropped (and counted)
    staleness = "sqrt"          # weight 1/sqrt(1 + s)
    latency_tail = "slow_sites" # heavy-tailed site latency: 20% of sites 10x slower
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from veil.federation.config import RunConfig

__all__ = ["BufferedConfig", "check_buffered"]


class BufferedConfig(BaseModel):
    """Buffered asynchronous aggregation: buffer size, staleness and the latency model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    buffer_size: int | None = Field(
        None, ge=1, description="K: contributions per applied update (needed in buffered mode)"
    )
    max_staleness: int | None = Field(
        None, ge=0, description="drop (and count) contributions staler than this (unset: keep all)"
    )
    staleness: Literal["constant", "sqrt", "polynomial"] = Field(
        "sqrt",
        description="staleness weight: constant (1) | sqrt (1/sqrt(1+s)) | polynomial "
        "((1+s)^-staleness_exponent)",
    )
    staleness_exponent: float = Field(
        0.5, gt=0, le=10, description="exponent a of staleness = 'polynomial': (1+s)^-a"
    )
    latency_tail: Literal["none", "slow_sites", "pareto"] = Field(
        "none",
        description="heavy tail on the log-normal site latency: none | slow_sites (a fixed "
        "share of sites slow_factor times slower) | pareto (each job x a Pareto(pareto_shape) "
        "factor >= 1)",
    )
    slow_fraction: float = Field(0.2, ge=0, le=1, description="slow_sites: share of slow sites")
    slow_factor: float = Field(10.0, ge=1, description="slow_sites: how many times slower")
    pareto_shape: float = Field(1.5, gt=0, description="pareto: tail index (smaller = heavier)")


def check_buffered(cfg: RunConfig) -> None:
    """Cross-checks of a buffered run (called by :class:`RunConfig` validation).

    Raises:
        ValueError: (reported as a ConfigError naming the key) no buffer size, a buffer
            larger than the sites, under 3 contributions per buffer with secure
            aggregation, a per-round deadline, or Poisson sampling.
    """
    from veil.federation.config import MIN_SECURE_COHORT

    fed = cfg.federation
    if fed.mode != "buffered":
        return
    k = fed.buffered.buffer_size
    if k is None:
        raise ValueError(
            "federation.mode = 'buffered' needs federation.buffered.buffer_size (K, the "
            "contributions per applied update)"
        )
    if k > cfg.data.sites:
        raise ValueError(
            f"federation.buffered.buffer_size ({k}) is larger than data.sites "
            f"({cfg.data.sites}): a buffer holds at most one contribution per site; lower it"
        )
    if cfg.aggregation.secure and k < MIN_SECURE_COHORT:
        raise ValueError(
            f"secure aggregation over a buffer needs federation.buffered.buffer_size >= "
            f"{MIN_SECURE_COHORT}, got {k}: with 2, each site can subtract its own update "
            "from the sum and learn the other's"
        )
    if fed.deadline_s is not None:
        raise ValueError(
            "federation.deadline_s is a synchronous-round deadline; buffered mode bounds "
            "staleness instead (federation.buffered.max_staleness); unset deadline_s"
        )
    if fed.sampling != "fixed":
        raise ValueError(
            "buffered mode keeps federation.cohort_size sites training at once; set "
            "federation.sampling = 'fixed'"
        )
    if cfg.privacy.client_on and (
        cfg.privacy.client_level.mechanism != "central"
        or (cfg.privacy.client_level.adaptive is not None
            and cfg.privacy.client_level.adaptive.enabled)
    ):
        raise ValueError(
            "buffered mode accounts client-level DP-FedAvg with a fixed clip norm only; set "
            "privacy.client_level.mechanism = 'central' and leave adaptive clipping off"
        )
