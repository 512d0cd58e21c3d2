"""FHE-friendly training: the compiled circuit is exactly the network that was trained."""

from __future__ import annotations

import numpy as np
import torch

from veil.models.ir import from_torch
from veil.securecompute.fhe import compile_model
from veil.securecompute.fhe.compile import approx_forward
from veil.securecompute.fhe.friendly import PolyActivation, train_fhe_friendly
from veil.securecompute.fhe.poly import approximate


def test_poly_activation_matches_the_chebyshev_series() -> None:
    p = approximate("relu", -3.0, 5.0, 7)
    mod = PolyActivation(np.asarray(p.coeffs), p.mid, p.half)
    x = np.linspace(-3, 5, 101)
    got = mod(torch.tensor(x, dtype=torch.float32)).numpy()
    assert np.max(np.abs(got - p(x))) < 1e-4


def test_compiled_circuit_equals_the_fine_tuned_polynomial_network() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    tuned, ranges = train_fhe_friendly(net, x, y, degree=2, epochs=15)
    assert isinstance(tuned[1], torch.nn.ReLU)  # exported with its original module
    model = from_torch(tuned, (6,))
    comp = compile_model(model, x, degree=2, ranges=ranges)
    assert comp.report["activations"][0]["degree"] == 2
    lo, hi = ranges[0]
    p = approximate("relu", lo, hi, 2)
    with torch.no_grad():
        poly_net = torch.nn.Sequential(tuned[0], PolyActivation(np.asarray(p.coeffs), p.mid,
                                                                p.half), tuned[2])
        want = poly_net(torch.tensor(x)).numpy()
    assert np.max(np.abs(approx_forward(comp, model, x) - want)) < 1e-3
