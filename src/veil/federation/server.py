"""The server: cohorts, the summation protocol's server side, decode, the optimiser.

The :class:`Server` holds the global parameters, the stages' server state (broadcast to
the sites every round), the summation protocol's server side, the server optimiser and
the client-level privacy randomness. It knows how many sites there are and which took
part; it never sees a site's data, size, per-site stage state or privacy streams.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from veil.aggregation import Pipeline, PipelineState, RoundResult
from veil.aggregation.base import DecodeContext
from veil.crypto.prg import SecureRng
from veil.errors import ConfigError
from veil.federation.config import MIN_SECURE_COHORT, secure_cohort_message
from veil.federation.server_opt import ServerOptimizer
from veil.privacy.neighbouring import check_cohort, fixed_cohort_size
from veil.privacy.release import draw_cohort

__all__ = ["Server", "round_half", "zero_row"]


def round_half(x: float) -> int:
    """Round to nearest integer (half up), at least 1: the accounting's fixed cohort size."""
    return fixed_cohort_size(x)


class Server:
    """The coordinating party of a federated run.

    Args:
        pipeline: the aggregation pipeline (its server side is used here).
        server_opt: server optimiser.
        params: initial global parameters (flat float32).
        n_sites: sites in the federation.
        cohort: sites per round (expected size for Poisson sampling).
        sampling: ``"fixed"`` or ``"poisson"``.
        seed: seed of the cohort schedule.
        secure_rng: server privacy randomness from fresh OS entropy (True) or the seed.
        secret_cohorts: draw cohorts from the privacy CSPRNG (set whenever client-level DP
            claims amplification by sampling); otherwise from the seed (reproducible).

    Raises:
        ConfigError: cohort out of range, under 3 sites with secure aggregation, or
            unknown sampling.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        server_opt: ServerOptimizer,
        params: torch.Tensor,
        n_sites: int,
        cohort: float | None = None,
        sampling: str = "fixed",
        seed: int = 0,
        secure_rng: bool = True,
        secret_cohorts: bool = False,
    ) -> None:
        self.n_sites = int(n_sites)
        self.cohort = float(cohort if cohort is not None else self.n_sites)
        check_cohort(sampling, self.cohort, self.n_sites)
        if pipeline.summation.name == "secagg" and self.cohort < MIN_SECURE_COHORT:
            raise ConfigError(secure_cohort_message(self.cohort), key="federation.cohort_size")
        self.pipeline = pipeline
        self.server_opt = server_opt
        self.sampling = sampling
        self.seed = seed
        self.secure_rng = secure_rng
        self.secret_cohorts = secret_cohorts
        self.params = params.detach().to(torch.float32).clone()
        self.pipe_state: PipelineState = pipeline.init()

    @property
    def cohort_size(self) -> int:
        """The (expected) cohort size as an integer (the fixed denominator)."""
        return round_half(self.cohort)

    def select_cohort(self, round: int) -> np.ndarray:
        """Sites selected for ``round``: secret (privacy CSPRNG) or from seed and round."""
        if self.secret_cohorts:
            return draw_cohort(SecureRng.fresh(), self.n_sites, self.cohort, self.sampling)
        rng = np.random.default_rng([self.seed, round, 0xC0])
        if self.sampling == "poisson":
            q = self.cohort / self.n_sites
            return np.flatnonzero(rng.random(self.n_sites) < q)
        return np.sort(rng.choice(self.n_sites, size=self.cohort_size, replace=False))

    def broadcast(self) -> PipelineState:
        """The stages' server state the sites encode with this round."""
        return self.pipe_state

    def privacy_rng(self, round: int) -> SecureRng:
        """Server-side privacy randomness of ``round`` (central DP noise)."""
        if self.secure_rng:
            return SecureRng.fresh()
        return SecureRng.from_seed(self.seed, f"round{round}/server")

    def aggregate(
        self,
        encoded: np.ndarray,
        site_ids: np.ndarray,
        round: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> RoundResult:
        """Sum the sites' encoded rows, decode, and step the global model.

        The global model and stage state change only if the whole round succeeds.

        Raises:
            AbortError, InvalidUpdateError: the round is lost (model unchanged).
        """
        new_state, res = self.pipeline.aggregate(
            self.pipe_state, encoded, site_ids, round, self.cohort_size,
            server_rng=self.privacy_rng(round), dropouts=dropouts,
        )
        self._step(new_state, res.aggregate)
        return res

    def apply_sum(self, total: np.ndarray, survivors: np.ndarray, round: int) -> RoundResult:
        """Decode a sum the summation protocol computed elsewhere, and step the model.

        What a deployment calls: the protocol ran over the network (each party in its own
        process), so the server holds only the sum of the survivors' encoded rows. The
        decode (central DP noise included) and the step are those of :meth:`aggregate`.

        Raises:
            InvalidUpdateError: the decoded aggregate is refused (model unchanged).
        """
        ids = np.asarray(survivors, dtype=np.int64)
        ctx = DecodeContext(round=round, survivors=ids, cohort_size=self.cohort_size,
                            rng=self.privacy_rng(round))
        new_state, agg, meas, events = self.pipeline.decode(self.pipe_state, total, ctx)
        meas["survivors"] = float(len(ids))
        self._step(new_state, agg)
        return RoundResult(agg, ids, {}, meas, events)

    def empty_cohort(self, round: int) -> RoundResult | None:
        """A round whose Poisson cohort is empty: the noise alone, or ``None`` (no step).

        Under central client-level DP (a DP-FedAvg stage: this server adds the noise),
        DP-FedAvg releases the noised sum of the sampled sites' clipped updates over the
        fixed expected cohort size; with no site sampled that is the noise alone. Skipping
        the round instead would release, un-noised, that the cohort was empty (the model
        would visibly not move), which add/remove-one-site DP does not allow. Without a
        server-side mechanism there is nothing to release and the model stays.
        """
        from veil.aggregation.dp_fedavg import AdaptiveDPFedAvg, DPFedAvg

        if not any(isinstance(t, (DPFedAvg, AdaptiveDPFedAvg))
                   for t in self.pipeline.chain.stages):
            return None
        total = zero_row(self.pipeline, self.params.numel(), self.cohort_size).sum(axis=0)
        return self.apply_sum(total, np.asarray([], dtype=np.int64), round)

    def _step(self, new_state: PipelineState, aggregate: np.ndarray) -> None:
        step = self.server_opt.step(self.params.double().numpy(), aggregate)
        self.params = torch.from_numpy(step.astype(np.float32))
        self.pipe_state = new_state

    def state_dict(self) -> dict[str, Any]:
        """Parameters, stage state and optimiser state."""
        return {
            "params": self.params,
            "pipeline": self.pipe_state,
            "server_opt": self.server_opt.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ConfigError: the parameters do not fit this model.
        """
        params = state["params"]
        if params.numel() != self.params.numel():
            raise ConfigError(
                "the checkpoint was written by a run with a different model; use the same "
                "config to resume, or a new run name"
            )
        self.params = params.clone()
        self.pipe_state = state["pipeline"]
        self.server_opt.load_state_dict(state["server_opt"])


def zero_row(pipeline: Pipeline, n_params: int, cohort_size: int) -> np.ndarray:
    """One encoded row ``(1, d)`` of a zero update, in the summation's dtype.

    Encoded with a throw-away stream (nothing of it is sent): its width is what the
    summation protocol sums, and the sum of no rows is zeros of this shape.
    """
    from veil.aggregation import EncodeContext

    zero = np.zeros((1, int(n_params)), dtype=np.float32)
    ctx = EncodeContext(round=0, site_ids=np.asarray([0]), weights=np.ones(1),
                        rngs=[SecureRng.fresh()], cohort_size=int(cohort_size))
    enc, _, _ = pipeline.encode_sites(pipeline.init(), None, zero, ctx)
    return np.zeros_like(enc)
