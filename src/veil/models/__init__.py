"""Torch models for veil's examples; any nn.Module without batch norm works too."""

from veil.models.zoo import MLP, MODELS, LogisticRegression, SmallCNN, build_model, n_parameters

__all__ = ["MLP", "MODELS", "LogisticRegression", "SmallCNN", "build_model", "n_parameters"]
