"""Feature-major SIMD packing (one ciphertext holds k features of the whole batch) against
numpy, and the layout choice: batched regressions cost ciphertexts per feature, not per sample."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits
from sklearn.linear_model import LinearRegression
from sklearn.neural_network import MLPClassifier

from veil.crypto.ckks import Evaluator, KeyOwner, choose_params
from veil.models.ir import evaluate, from_sklearn
from veil.securecompute.fhe import approx_forward, compile_model
from veil.securecompute.fhe.featurewise import FeatureMap, input_map, pack_features, unpack_features
from veil.securecompute.fhe.run import run_inference

# (outputs, inputs, batch): one output group with a fold, several groups, a full group, tiny
CASES = [(1, 10, 300), (10, 64, 50), (40, 30, 3), (3, 7, 5)]


@pytest.mark.parametrize("m, n, batch", CASES)
def test_two_feature_maps_match_numpy(m: int, n: int, batch: int) -> None:
    p = choose_params(2, scale_bits=30)
    rng = np.random.default_rng(m * 1000 + n)
    seg = 1 << int(np.ceil(np.log2(batch)))
    imap = input_map(n, p.slots // seg)
    w1, b1 = rng.normal(size=(m, n)), rng.normal(size=m)
    w2, b2 = rng.normal(size=(4, m)), rng.normal(size=4)
    f1 = FeatureMap(w1, b1, imap, seg, p.slots)
    f2 = FeatureMap(w2, b2, f1.out_map, seg, p.slots)
    owner = KeyOwner(p, sorted(set(f1.steps + f2.steps)))
    ev = Evaluator(owner.evaluation_keys())
    x = rng.normal(size=(batch, n))
    y1 = f1.apply(ev, ev.load(owner.encrypt(pack_features(x, imap, seg, p.slots))))
    y2 = f2.apply(ev, y1)
    got1 = unpack_features(owner.decrypt(ev.dump(y1)), f1.out_map, seg, batch, m)
    got2 = unpack_features(owner.decrypt(ev.dump(y2)), f2.out_map, seg, batch, 4)
    want1 = x @ w1.T + b1
    assert np.max(np.abs(got1 - want1)) < 1e-4  # scale 2^30+: ~2e-6 observed
    assert np.max(np.abs(got2 - (want1 @ w2.T + b2))) < 1e-4
    assert len(y1) == f1.groups == -(-m // f1.mp)


def test_batched_linear_regression_packs_features_and_matches_plaintext() -> None:
    x, y = load_diabetes(return_X_y=True)
    model = from_sklearn(LinearRegression().fit(x[:300], y[:300]))
    rng = np.random.default_rng(5)
    xs = np.vstack([x] * 5)[:2100] + rng.normal(scale=0.01, size=(2100, x.shape[1]))
    comp = compile_model(model, x[:300], batch=len(xs))
    assert comp.report["layout"] == "features" and comp.depth == 0  # no rescale needed
    assert comp.plan.params.poly_degree == 4096 and comp.plan.seg == 2048  # 2 chunks
    res = run_inference(model, xs, x[:300], compiled=comp)
    want = evaluate(model, xs)
    assert np.max(np.abs(res.outputs - want) / np.maximum(1.0, np.abs(want))) < 1e-3
    # bytes scale with features / k per chunk, not with the samples: 2 chunks x 10 features
    assert res.bytes_up < 25 * 40_000
    one = compile_model(model, x[:300], batch=1)
    assert one.report["layout"] == "rows"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_feature_major_mlp_matches_the_compiled_circuit() -> None:
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    est = MLPClassifier((16,), max_iter=60, random_state=0).fit(x[:1200], y[:1200])
    model = from_sklearn(est)
    comp = compile_model(model, x[:1200], degree=3, batch=40, layout="features")
    assert comp.report["layout"] == "features"
    xs = x[1200:1240]
    res = run_inference(model, xs, x[:1200], compiled=comp)
    assert np.max(np.abs(res.outputs - approx_forward(comp, model, xs))) < 5e-2  # CKKS noise
