"""Standard normal samples from a CSPRNG stream (the DP-SGD noise)."""

from __future__ import annotations

import math

import torch

from veil.crypto.prg import SecureRng

__all__ = ["gaussian_noise"]


def gaussian_noise(rng: SecureRng, n: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` standard normal samples from a CSPRNG stream (Box–Muller in float64).

    Two 53-bit uniforms per pair of samples, computed in torch for speed. The result is
    written into ``out`` (any float dtype, ``n`` elements) when given, else float64.
    """
    m = (n + 1) // 2
    w = torch.frombuffer(bytearray(rng.bytes(16 * m)), dtype=torch.int64)
    u = (
        w.bitwise_right_shift_(11)
        .bitwise_and_((1 << 53) - 1)
        .to(torch.float64)
        .add_(0.5)
        .mul_(2.0**-53)
        .view(2, m)
    )
    r = u[0].log_().mul_(-2.0).sqrt_()
    th = u[1].mul_(2.0 * math.pi)
    if out is None:
        out = torch.empty(n, dtype=torch.float64)
    out[:m].copy_(torch.cos(th).mul_(r))
    out[m:].copy_(torch.sin(th).mul_(r)[: n - m])
    return out
