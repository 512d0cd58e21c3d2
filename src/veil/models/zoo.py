"""Small torch models for tabular and image data. Users may pass any nn.Module instead."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from veil.errors import ConfigError

__all__ = ["LogisticRegression", "MLP", "SmallCNN", "build_model", "MODELS", "n_parameters"]


class LogisticRegression(nn.Module):
    """Multinomial logistic regression (a single linear layer on flattened input)."""

    def __init__(self, n_features: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class MLP(nn.Module):
    """Fully connected net: flatten → [Linear → activation]* → Linear.

    ``MLP(64, 10, (128, 128))`` is the 26k-parameter digits model of the benchmarks.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}
        if activation not in acts:
            raise ConfigError(f"unknown activation {activation!r}; choose one of {sorted(acts)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), acts[activation]()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv layers (tanh, average pooling) and a linear head; for 8x8 or 28x28 images.

    Tanh and average pooling follow Papernot et al. 2021 (bounded activations train better
    under DP); no batch norm, so per-example gradients are well defined.
    """

    def __init__(self, in_channels: int, n_classes: int, image_size: int, width: int = 16) -> None:
        super().__init__()
        pool = 2 if image_size >= 16 else 1
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.Tanh(),
            nn.AvgPool2d(pool),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.Tanh(),
            nn.AvgPool2d(2),
        )
        side = image_size // pool // 2
        self.head = nn.Linear(2 * width * side * side, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


MODELS = ("logreg", "mlp", "cnn")


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    n_classes: int,
    hidden: Sequence[int] = (128, 128),
    seed: int = 0,
) -> nn.Module:
    """Build a named model for inputs of ``input_shape`` with a seeded initialisation.

    Raises:
        ConfigError: unknown name, or a CNN asked for non-image input.
    """
    g = torch.random.fork_rng(devices=[])
    with g:
        torch.manual_seed(seed)
        n_features = 1
        for s in input_shape:
            n_features *= int(s)
        if name == "logreg":
            return LogisticRegression(n_features, n_classes)
        if name == "mlp":
            return MLP(n_features, n_classes, tuple(hidden))
        if name == "cnn":
            if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
                raise ConfigError(
                    f"cnn needs square image input (C, H, W), got {input_shape}; "
                    "use data.image = true or model = 'mlp'",
                    key="model.name",
                )
            return SmallCNN(input_shape[0], n_classes, input_shape[1])
    raise ConfigError(f"unknown model {name!r}; choose one of {MODELS}", key="model.name")


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
