"""Former home of local training; it now lives in :mod:`veil.training` (names kept here).

``VectorisedTrainer`` is :class:`veil.training.Trainer`.
"""

from veil.models.params import flat_params, load_flat_params
from veil.training import (
    LocalConfig,
    SiteData,
    batch_schedule,
    per_example_loss,
    train_site_reference,
)
from veil.training import Trainer as VectorisedTrainer

__all__ = [
    "LocalConfig",
    "SiteData",
    "VectorisedTrainer",
    "batch_schedule",
    "flat_params",
    "load_flat_params",
    "per_example_loss",
    "train_site_reference",
]
