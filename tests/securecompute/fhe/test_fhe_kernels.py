"""CKKS kernels against numpy: BSGS diagonal products (one sample and SIMD batches) and
Chebyshev polynomials; the planned depth is the depth used."""

from __future__ import annotations

import numpy as np
import pytest

from veil.crypto.ckks import Evaluator, KeyOwner, choose_params
from veil.securecompute.fhe.matvec import DenseMap, tile
from veil.securecompute.fhe.poly import approximate, best_baby, evaluate_poly, plan_depth

SHAPES = [(10, 64), (64, 10), (1, 50), (16, 16), (3, 7)]


@pytest.fixture(scope="module")
def ring():
    p = choose_params(2, scale_bits=30)
    single = [DenseMap(np.ones((m, n)), np.zeros(m), _p2(n), p.slots, p.slots, final=True)
              for m, n in SHAPES]
    batch = [DenseMap(np.ones((32, 20)), np.zeros(32), 32, 128, p.slots),
             DenseMap(np.ones((3, 32)), np.zeros(3), 32, 128, p.slots, final=True)]
    steps = {s for d in single + batch for s in d.steps}
    owner = KeyOwner(p, sorted(steps))
    return p, owner, Evaluator(owner.evaluation_keys())


def _p2(n: int) -> int:
    return 1 << int(np.ceil(np.log2(n)))


@pytest.mark.parametrize("shape", SHAPES)
def test_dense_map_matches_numpy(ring, shape) -> None:
    p, owner, ev = ring
    rng = np.random.default_rng(sum(shape))
    m, n = shape
    w, b, x = rng.normal(size=(m, n)), rng.normal(size=m), rng.normal(size=n)
    dm = DenseMap(w, b, _p2(n), p.slots, p.slots, final=True)
    (c,) = ev.load(owner.encrypt([tile(x, _p2(n), p.slots, p.slots)]))
    (out,) = owner.decrypt(ev.dump([dm.apply(ev, c)]))
    assert np.max(np.abs(out[:m] - (w @ x + b))) < 1e-3  # scale 2^40 here: ~1e-6 observed
    assert dm.rotations <= 2 * int(np.ceil(np.sqrt(min(_p2(m), _p2(n))))) + 8


def test_batched_two_layer_product_matches_numpy(ring) -> None:
    p, owner, ev = ring
    rng = np.random.default_rng(3)
    w1, w2 = rng.normal(size=(32, 20)) / 4, rng.normal(size=(3, 32)) / 4
    b1, b2 = rng.normal(size=32), rng.normal(size=3)
    d1 = DenseMap(w1, b1, 32, 128, p.slots)
    d2 = DenseMap(w2, b2, d1.out_period, 128, p.slots, final=True)
    xs = rng.normal(size=(p.slots // 128, 20))
    vec = np.concatenate([tile(x, 32, 128, 128) for x in xs])
    (c,) = ev.load(owner.encrypt([vec]))
    (out,) = owner.decrypt(ev.dump([d2.apply(ev, d1.apply(ev, c))]))
    want = (xs @ w1.T + b1) @ w2.T + b2
    assert np.max(np.abs(out.reshape(-1, 128)[:, :3] - want)) < 1e-3


def test_batched_layout_needs_room() -> None:
    from veil.errors import ConfigError

    with pytest.raises(ConfigError):
        DenseMap(np.ones((32, 20)), np.zeros(32), 32, 32, 4096)


@pytest.mark.parametrize("deg", [3, 7, 12])
def test_polynomial_matches_its_plaintext_and_planned_depth(deg: int) -> None:
    k = best_baby(deg)
    depth, _ = plan_depth(deg, k)
    p = choose_params(depth, scale_bits=30, integer_bits=8)
    owner = KeyOwner(p)
    ev = Evaluator(owner.evaluation_keys())
    poly = approximate("sigmoid", -6.0, 6.0, deg)
    rng = np.random.default_rng(deg)
    x = rng.uniform(-6, 6, p.slots)
    (c,) = ev.load(owner.encrypt([(x - poly.mid) / poly.half]))
    ct = evaluate_poly(ev, c, np.asarray(poly.coeffs), k)
    assert p.depth - ev.level(ct) == depth
    (out,) = owner.decrypt(ev.dump([ct]))
    assert np.max(np.abs(out - poly(x))) < 1e-3
    sig = 1 / (1 + np.exp(-x))
    assert np.max(np.abs(out - sig)) < poly.max_err + 1e-3


def test_approximation_error_falls_with_degree() -> None:
    errs = [approximate("relu", -4, 4, d).max_err for d in (3, 7, 15, 31)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert approximate("square", -3, 3, 2).max_err < 1e-12


def test_zero_diagonals_cost_no_rotation(ring) -> None:
    p, owner, ev = ring
    w = np.diag(np.arange(1.0, 17.0))  # only diagonal 0 is non-zero
    dm = DenseMap(w, np.zeros(16), 16, p.slots, p.slots, final=True)
    assert dm.rotations == 0 and dm.nonzero == [0]
    x = np.arange(16.0) / 16
    (c,) = ev.load(owner.encrypt([tile(x, 16, p.slots, p.slots)]))
    (out,) = owner.decrypt(ev.dump([dm.apply(ev, c)]))
    assert np.max(np.abs(out[:16] - w @ x)) < 1e-3
