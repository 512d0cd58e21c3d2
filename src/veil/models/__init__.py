"""Torch models for veil's examples; any nn.Module without batch norm works too."""

from veil.models.params import flat_params, load_flat_params
from veil.models.zoo import MLP, MODELS, LogisticRegression, SmallCNN, build_model, n_parameters

__all__ = [
    "flat_params",
    "load_flat_params",
    "MLP",
    "MODELS",
    "LogisticRegression",
    "SmallCNN",
    "build_model",
    "n_parameters",
]
