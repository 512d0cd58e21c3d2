"""Scale bookkeeping in the Paterson–Stockmeyer evaluation: an input whose scale drifted from Δ
(as the output of an earlier layer's products does) must still evaluate exactly.

Regression: the products Δ_a·Δ_b/q compound the drift with the degree, so operands of one sum
met at one level with scales ~1 % apart ("cannot add ciphertexts at scales ...") or, below 1 %,
were forced equal at a relative error of that size. Now every part is asked for the scale that
makes its sum exact: no forced fix-up, the output keeps the input's scale.
"""

from __future__ import annotations

import numpy as np
import pytest

from veil.crypto.ckks import Evaluator, KeyOwner, choose_params
from veil.errors import LocalError
from veil.securecompute.fhe.poly import approximate, best_baby, evaluate_poly, plan_depth


@pytest.mark.parametrize("deg, drift", [(15, 1e-2), (15, 1e-3), (31, 3e-3)])
def test_drifted_input_scale_evaluates_exactly(deg: int, drift: float) -> None:
    k = best_baby(deg)
    depth, _ = plan_depth(deg, k)
    p = choose_params(depth + 1, scale_bits=26, integer_bits=8)  # one level to drift the scale
    owner = KeyOwner(p)
    ev = Evaluator(owner.evaluation_keys())
    poly = approximate("relu", -4.0, 4.0, deg)
    x = np.random.default_rng(deg).uniform(-4.0, 4.0, p.slots)
    (c,) = ev.load(owner.encrypt([(x - poly.mid) / poly.half]))
    c = ev.mul_plain(c, 1.0, target_scale=c.scale * (1.0 + drift))
    ct = evaluate_poly(ev, c, np.asarray(poly.coeffs), k)
    assert ev.scale_fixups == 0  # no sum met at one level with different scales
    assert ct.scale == pytest.approx(c.scale, rel=1e-9)
    assert ev.level(c) - ev.level(ct) == depth  # exact scales cost no extra level
    (out,) = owner.decrypt(ev.dump([ct]))
    # a forced 1e-3 fix-up alone would err by ~1e-3 * |p| ~ 4e-3; observed here: <= 3e-4
    assert np.max(np.abs(out - poly(x))) < 1e-3


def test_product_of_different_scales_is_exact() -> None:
    p = choose_params(2, scale_bits=30)
    owner = KeyOwner(p)
    ev = Evaluator(owner.evaluation_keys())
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-1, 1, p.slots), rng.uniform(-1, 1, p.slots)
    a, b = ev.load(owner.encrypt([x, y]))
    b = ev.mul_plain(b, 1.0, target_scale=b.scale * 1.05)  # 5 % apart: too far to force equal
    prod = ev.multiply(a, b)
    assert prod.scale == pytest.approx(a.scale * b.scale / ev.prime(ev.level(b)), rel=1e-12)
    (out,) = owner.decrypt(ev.dump([prod]))
    assert np.max(np.abs(out - x * y)) < 1e-4
    with pytest.raises(LocalError):
        ev.add(ev.mul_plain(a, 1.0), b)  # a sum still refuses scales it cannot reconcile
    with pytest.raises(LocalError):
        ev.prime(0)
