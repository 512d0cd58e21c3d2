"""Local training at the sites, vectorised across sites.

A :class:`Trainer` is a sampling schedule (:mod:`~veil.training.schedule`), a gradient
source (:mod:`~veil.training.gradients`: plain, or clipped and noised per example) and one
SGD step; DP-SGD is the same trainer with DP parts (:func:`dpsgd_trainer`), and whatever
spends privacy reports its ``DpEvent`` (:meth:`Trainer.round_event`). Privacy randomness
comes from per-site CSPRNG streams (:mod:`~veil.training.streams`).

This package sits below :mod:`veil.privacy` and :mod:`veil.federation`; it imports only
models, data, crypto and errors.
"""

from veil.models.params import flat_params, load_flat_params
from veil.training.chain import ChainOp, linear_chain
from veil.training.clipping import ENGINES, PerExampleClipper
from veil.training.config import LocalConfig
from veil.training.data import SiteData, per_example_loss
from veil.training.gradients import (
    ClippedNoisedGradients,
    GradientSource,
    PlainGradients,
    StepGradients,
)
from veil.training.noise import gaussian_noise
from veil.training.reference import train_site_reference
from veil.training.schedule import (
    Batches,
    PoissonBatches,
    RoundSites,
    Schedule,
    ShuffledBatches,
    batch_schedule,
    poisson_batches,
)
from veil.training.streams import FreshStreams, PrivacyStreams, SeededStreams
from veil.training.trainer import Trainer, dpsgd_trainer

__all__ = [
    "ENGINES",
    "Batches",
    "ChainOp",
    "ClippedNoisedGradients",
    "FreshStreams",
    "GradientSource",
    "LocalConfig",
    "PerExampleClipper",
    "PlainGradients",
    "PoissonBatches",
    "PrivacyStreams",
    "RoundSites",
    "Schedule",
    "SeededStreams",
    "ShuffledBatches",
    "SiteData",
    "StepGradients",
    "Trainer",
    "batch_schedule",
    "dpsgd_trainer",
    "flat_params",
    "gaussian_noise",
    "linear_chain",
    "load_flat_params",
    "per_example_loss",
    "poisson_batches",
    "train_site_reference",
]
