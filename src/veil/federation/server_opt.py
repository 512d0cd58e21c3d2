"""Server optimisers: apply the aggregated (mean) update to the global model.

FedAvg (x ← x + η·Δ), FedAvgM (server momentum, Hsu et al. 2019) and FedAdam
(Reddi et al. 2021). State is explicit (numpy arrays) so checkpoints can hold it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from veil.errors import ConfigError

__all__ = ["ServerOptimizer", "make_server_optimizer"]


@dataclass
class ServerOptimizer:
    """One server optimiser with explicit state.

    Attributes:
        kind: ``fedavg``, ``fedavgm`` or ``fedadam``.
        lr: server learning rate η.
        beta1: momentum (fedavgm) or first-moment decay (fedadam).
        beta2: second-moment decay (fedadam).
        tau: adaptivity (fedadam's ε).
    """

    kind: str
    lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    m: np.ndarray | None = field(default=None, repr=False)
    v: np.ndarray | None = field(default=None, repr=False)

    def step(self, params: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """Return new parameters given the mean client update ``delta`` (a pseudo-gradient
        pointing downhill: local minus global)."""
        if self.kind == "fedavg":
            return params + self.lr * delta
        if self.m is None:
            self.m = np.zeros_like(delta)
        if self.kind == "fedavgm":
            self.m = self.beta1 * self.m + delta
            return params + self.lr * self.m
        if self.v is None:
            self.v = np.full_like(delta, self.tau**2)
        self.m = self.beta1 * self.m + (1 - self.beta1) * delta
        self.v = self.beta2 * self.v + (1 - self.beta2) * delta**2
        return params + self.lr * self.m / (np.sqrt(self.v) + self.tau)

    def state_dict(self) -> dict[str, np.ndarray | None]:
        """Moments for checkpoints."""
        return {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, np.ndarray | None]) -> None:
        """Restore moments."""
        self.m, self.v = state.get("m"), state.get("v")


def make_server_optimizer(kind: str, lr: float, momentum: float = 0.9) -> ServerOptimizer:
    """Build a server optimiser by name.

    Raises:
        ConfigError: unknown name.
    """
    if kind not in ("fedavg", "fedavgm", "fedadam"):
        raise ConfigError(f"unknown server optimizer {kind!r}", key="federation.server_optimizer")
    return ServerOptimizer(kind, lr=lr, beta1=momentum)
