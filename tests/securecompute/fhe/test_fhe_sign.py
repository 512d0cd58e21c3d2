"""ReLU to within 1e-3 under CKKS: a composite sign polynomial, against numpy on random inputs;
the single Chebyshev interpolant it replaces cannot get there at a usable degree."""

from __future__ import annotations

import numpy as np
import pytest

from veil.crypto.ckks import Evaluator, KeyOwner, choose_params
from veil.models.ir import Model, ReLU, evaluate
from veil.securecompute.fhe import approx_forward, compile_model
from veil.securecompute.fhe.poly import approximate
from veil.securecompute.fhe.sign import CompositeStep, composite_relu

TOL = 1e-3  # absolute, on inputs in the calibrated range [-4.4, 4.4]


def test_composite_relu_meets_1e3_where_chebyshev_does_not() -> None:
    comp = composite_relu(-4.4, 4.4)
    assert comp.max_err <= TOL
    assert approximate("relu", -4.4, 4.4, 31).max_err > 50 * TOL  # 0.069: the kink
    x = np.random.default_rng(7).uniform(-4.4, 4.4, 100_000)
    assert np.max(np.abs(comp(x) - np.maximum(x, 0))) <= TOL


@pytest.mark.slow  # N = 16384, depth 13: ~10 s quiet, 30 s on the loaded 2-core machine
def test_composite_relu_on_ciphertexts_matches_numpy() -> None:
    relu = composite_relu(-4.4, 4.4)
    step = CompositeStep(relu)
    p = choose_params(step.depth, scale_bits=26, integer_bits=8)
    assert p.poly_degree == 16384  # depth 13 fits the 438-bit bound at scale 2^26
    owner = KeyOwner(p)
    ev = Evaluator(owner.evaluation_keys())
    x = np.random.default_rng(8).uniform(-4.4, 4.4, p.slots)
    (c,) = ev.load(owner.encrypt([x / relu.half]))
    out = step.apply(ev, c)
    assert ev.level(out) == 0  # the planned depth is the depth used
    (got,) = owner.decrypt(ev.dump([out]))
    assert np.max(np.abs(got - np.maximum(x, 0))) <= 2 * TOL  # approximation + CKKS noise


def test_auto_degree_picks_the_composite_for_a_bare_relu() -> None:
    model = Model((8,), (ReLU(),))
    calib = np.random.default_rng(9).uniform(-4, 4, (250, 8))
    comp = compile_model(model, calib)
    (act,) = comp.report["activations"]
    assert act["form"] == "composite-sign" and act["max_err"] <= TOL
    got = approx_forward(comp, model, calib)
    assert np.max(np.abs(got - evaluate(model, calib))) <= TOL
