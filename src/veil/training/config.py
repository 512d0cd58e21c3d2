"""Local training hyper-parameters (the same at every site)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LocalConfig"]


@dataclass(frozen=True)
class LocalConfig:
    """Local training hyper-parameters (the same at every site).

    Attributes:
        epochs: passes over the site's data per round.
        batch_size: minibatch size.
        lr: learning rate.
        momentum: SGD momentum (0 = plain SGD).
        weight_decay: L2 penalty added to the gradient.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
