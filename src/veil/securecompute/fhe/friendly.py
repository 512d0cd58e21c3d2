"""FHE-friendly training: fine-tune a torch model through the polynomials CKKS will evaluate.

The standard path trains with ReLU and approximates it afterwards (``compile_model`` picks a
degree that keeps the plaintext agreement; high degree → deep circuit → large ring). This
path instead:

1. calibrates each activation's input range on the training data (as the compiler does);
2. replaces each ReLU/GELU/Sigmoid/Tanh by its low-degree Chebyshev interpolant on that range
   (:class:`PolyActivation`, a torch module evaluating the same series);
3. fine-tunes the network so it adapts to the polynomial (pooling stays average pooling);
4. restores the original activation modules for export to the IR and compiles with the
   *same* ranges and degree, so CKKS evaluates exactly the network that was trained.

:func:`compare_paths` reports accuracy, depth and ring size of both paths.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from veil.securecompute.fhe.poly import approximate

__all__ = ["PolyActivation", "train_fhe_friendly", "compare_paths"]

_ACTS = {"ReLU": "relu", "GELU": "gelu", "Sigmoid": "sigmoid", "Tanh": "tanh"}


def PolyActivation(coeffs: np.ndarray, mid: float, half: float) -> Any:  # noqa: N802
    """A torch module computing Σ c_j T_j((x − mid)/half) (the CKKS polynomial)."""
    import torch

    class _Poly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.coeffs: torch.Tensor
            self.register_buffer("coeffs", torch.tensor(np.asarray(coeffs), dtype=torch.float32))
            self.center, self.radius = float(mid), float(half)  # (nn.Module has a .half())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c = self.coeffs
            t = (x - self.center) / self.radius
            t_prev, t_cur = torch.ones_like(t), t
            out = c[0] * t_prev + (c[1] * t_cur if len(c) > 1 else 0.0)
            for j in range(2, len(c)):
                t_prev, t_cur = t_cur, 2 * t * t_cur - t_prev
                out = out + c[j] * t_cur
            return out

    return _Poly()


def _activation_inputs(net: Any, x: Any) -> list[tuple[int, Any]]:
    """(module index, input tensor) of each activation of a Sequential on x."""
    import torch

    out, h = [], x
    with torch.no_grad():
        for i, m in enumerate(net):
            if type(m).__name__ in _ACTS:
                out.append((i, h))
            h = m(h)
    return out


def train_fhe_friendly(
    net: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    degree: int = 3,
    epochs: int = 60,
    lr: float = 0.005,
    seed: int = 0,
    margin: float = 1.1,
) -> tuple[Any, dict[int, tuple[float, float]]]:
    """Fine-tune ``net`` (an ``nn.Sequential`` classifier) through degree-``degree`` polynomials.

    Returns the fine-tuned net with its original activation modules (ready for
    ``from_torch``) and the ranges per activation index to pass to ``compile_model``.
    """
    import copy

    import torch

    torch.manual_seed(seed)
    net = copy.deepcopy(net)
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y)
    ranges: dict[int, tuple[float, float]] = {}
    originals = {}
    for k, (i, h) in enumerate(_activation_inputs(net, xt)):
        lo, hi = float(h.min()), float(h.max())
        c, r = (hi + lo) / 2, max((hi - lo) / 2, 1e-3) * margin
        lo, hi = c - r, c + r
        ranges[k] = (lo, hi)
        p = approximate(_ACTS[type(net[i]).__name__], lo, hi, degree)
        originals[i] = net[i]
        net[i] = PolyActivation(np.asarray(p.coeffs), p.mid, p.half)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    for i, m in originals.items():
        net[i] = m
    return net.eval(), ranges


def compare_paths(net: Any, input_shape: tuple[int, ...], x_train: np.ndarray,
                  y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                  degree: int = 3) -> dict[str, Any]:
    """Accuracy (labels) and circuit size of: ReLU training + approximation vs FHE-friendly."""
    from veil.models.ir import from_torch
    from veil.securecompute.fhe.compile import approx_forward, compile_model

    def acc(scores: np.ndarray) -> float:
        return float(np.mean(scores.argmax(1) == y_test))

    model = from_torch(net, input_shape)
    std = compile_model(model, x_train)
    friendly_net, ranges = train_fhe_friendly(net, x_train, y_train, degree=degree)
    fmodel = from_torch(friendly_net, input_shape)
    fr = compile_model(fmodel, x_train, degree=degree, ranges=ranges)
    from veil.models.ir import evaluate

    return {
        "plaintext_relu": {"accuracy": acc(evaluate(model, x_test))},
        "approximated": {"accuracy": acc(approx_forward(std, model, x_test)),
                         "degree": std.report["approximation"]["degree"],
                         "depth": std.depth, "ring": std.plan.params.poly_degree},
        "fhe_friendly": {"accuracy": acc(approx_forward(fr, fmodel, x_test)), "degree": degree,
                         "depth": fr.depth, "ring": fr.plan.params.poly_degree},
    }
