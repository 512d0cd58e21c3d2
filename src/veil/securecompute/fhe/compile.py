"""Lower an IR :class:`~veil.models.ir.Model` to a CKKS circuit: dense maps and polynomials.

1. Runs of affine layers (Linear, Conv2d, AvgPool2d, Flatten) are merged into ONE dense
   matrix (a convolution becomes its Toeplitz matrix, the pool its averaging matrix): one
   level and one baby-step/giant-step product per run.
2. ReLU/GELU/Sigmoid/Tanh become Chebyshev polynomials on a range calibrated on plaintext
   data (the pre-activation min/max over the calibration set, widened by ``margin``); the
   map x → (x − mid)/half is folded into the preceding dense matrix. Inputs outside the range
   are not clamped: polynomials diverge there, which is why the margin exists.
3. A final Softmax/Argmax is left to the client (it decrypts scores and takes the argmax;
   softmax does not change it). MaxPool2d, a Softmax inside the model and tree ensembles
   have no low-depth CKKS form here and raise :class:`UnsupportedModelError` that says to use
   the mpc backend (see :data:`FOREST_REASON`).

The depth (one per dense map plus each polynomial's depth) and the largest vector fix the
CKKS parameters (:func:`veil.crypto.ckks.choose_params`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from veil.crypto.ckks import CkksParams, choose_params, normalise_steps
from veil.errors import ConfigError
from veil.models.ir import (
    ACTIVATION_KINDS,
    Argmax,
    AvgPool2d,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    Model,
    ReLU,
    Softmax,
    TreeEnsemble,
    UnsupportedModelError,
    evaluate_layer,
)
from veil.securecompute.fhe.featurewise import FeatureMap
from veil.securecompute.fhe.forest_probe import forest_reason
from veil.securecompute.fhe.layout import estimate_cost, feature_steps, row_steps
from veil.securecompute.fhe.matvec import DenseMap, next_pow2
from veil.securecompute.fhe.poly import ChebPoly, approximate, best_baby, evaluate_poly, plan_depth
from veil.securecompute.fhe.sign import CompositeRelu, CompositeStep, composite_relu

__all__ = ["Plan", "Compiled", "compile_model", "FOREST_REASON", "PolyStep"]

# the static form; the message a forest gets quotes the recorded measurement (forest_probe)
FOREST_REASON = (
    "tree ensembles need a comparison x[f] <= t per node; under CKKS that is a sign "
    "polynomial of degree ~1/gap (composite minimax, depth >= 10 for a 2^-8 gap) followed by "
    "a depth-4 path product, i.e. N = 32768 rings and seconds per node batch, while the mpc "
    "backend compares exactly in a few rounds: route forests to --backend mpc"
)

_ACT_NAMES = {v: k for k, v in ACTIVATION_KINDS.items()}
_AFFINE = (Linear, Conv2d, AvgPool2d, Flatten)


@dataclass(frozen=True)
class Plan:
    """What the client needs (public): parameters, rotation steps, input/output layout.

    Attributes:
        params: CKKS parameters.
        steps: rotation steps needing Galois keys.
        relin: whether ciphertext products occur (relinearisation keys needed).
        in_features: values per sample; in_period: their padded period; block: slots/sample.
        out_features: values per sample in the result.
        task: the model's task.
        input_affine: (shift, scale): the client encrypts (x - shift) / scale. Not the identity
            only when the model starts with an activation: its polynomial's interval
            normalisation moves to the client (saving a level; the interval is public).
        layout: ``rows`` (samples side by side, :mod:`.matvec`) or ``features`` (one
            ciphertext holds k features of up to ``seg`` samples, :mod:`.featurewise`).
        seg / in_map / out_map: the feature-major layout (segment size; feature per
            ciphertext and segment of the input and of the output).
    """

    params: CkksParams
    steps: tuple[int, ...]
    relin: bool
    in_features: int
    in_period: int
    block: int
    out_features: int
    task: str
    input_affine: tuple[float, float] = (0.0, 1.0)
    layout: str = "rows"
    seg: int = 0
    in_map: tuple[tuple[int, ...], ...] = ()
    out_map: tuple[tuple[int, ...], ...] = ()

    @property
    def per_ciphertext(self) -> int:
        """Samples per ciphertext (``rows``) or per chunk of ciphertexts (``features``)."""
        return self.seg if self.layout == "features" else self.params.slots // self.block


@dataclass
class PolyStep:
    """An activation replaced by a Chebyshev polynomial on [lo, hi]."""

    poly: ChebPoly
    baby: int

    @property
    def depth(self) -> int:
        return plan_depth(self.poly.degree, self.baby)[0]

    @property
    def products(self) -> int:
        """Ciphertext products per ciphertext."""
        return plan_depth(self.poly.degree, self.baby)[1]

    def apply(self, ev: Any, t: Any) -> Any:
        """The polynomial on a ciphertext holding t = (x - mid) / half."""
        return evaluate_poly(ev, t, np.asarray(self.poly.coeffs), self.baby)


@dataclass
class Compiled:
    """A model lowered to CKKS steps (server side: holds the weights)."""

    plan: Plan
    steps: list[Any]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return self.plan.params.depth


def _affine_matrix(layers: list[Any], in_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The dense (out, in) matrix and bias of a run of affine layers."""
    n = int(np.prod(in_shape))
    basis = np.vstack([np.zeros(n), np.eye(n)]).reshape((n + 1,) + in_shape)
    y = basis
    for layer in layers:
        y = evaluate_layer(layer, y)
    y = y.reshape(n + 1, -1)
    bias = y[0]
    return (y[1:] - bias).T.copy(), bias.copy()


def _segments(model: Model) -> list[tuple[str, Any]]:
    """[('dense', [layers]) | ('act', name)], checking what CKKS can do."""
    segs: list[tuple[str, Any]] = []
    layers = list(model.layers)
    while layers and isinstance(layers[-1], Softmax | Argmax):
        layers.pop()  # the client takes the argmax of the decrypted scores
    for i, layer in enumerate(layers):
        if isinstance(layer, TreeEnsemble):
            raise UnsupportedModelError(f"fhe backend: {forest_reason()}")
        if isinstance(layer, MaxPool2d):
            raise UnsupportedModelError(
                f"fhe backend: layer {i} MaxPool2d needs comparisons; train with AvgPool2d "
                "(the FHE-friendly path) or use --backend mpc"
            )
        if isinstance(layer, Softmax | Argmax):
            raise UnsupportedModelError(f"fhe backend: layer {i} {type(layer).__name__} "
                                        "is only supported as the last layer")
        if isinstance(layer, _AFFINE):
            if segs and segs[-1][0] == "dense":
                segs[-1][1].append(layer)
            else:
                segs.append(("dense", [layer]))
        elif type(layer) in _ACT_NAMES:
            segs.append(("act", _ACT_NAMES[type(layer)]))
        else:
            raise UnsupportedModelError(
                f"fhe backend: unsupported layer {i} {type(layer).__name__}")
    if not segs:
        raise UnsupportedModelError("fhe backend: nothing to compute")
    return segs


def _compile_once(
    model: Model,
    calibration: np.ndarray,
    *,
    degree: int | dict[str, int] = 15,
    margin: float = 1.1,
    batch: int = 1,
    scale_bits: int = 26,
    ranges: dict[int, tuple[float, float]] | None = None,
    layout: str = "rows",
) -> Compiled:
    """Compile ``model`` for CKKS with fixed polynomial degrees (see :func:`compile_model`).

    Args:
        model: the IR model.
        calibration: plaintext inputs (N, *input_shape) whose pre-activation ranges fix the
            polynomial intervals (the training data, or a public sample of it).
        degree: polynomial degree, for all activations or per name (``{"relu": 15}``).
        margin: widening factor of the calibrated ranges.
        batch: samples per request; > 1 packs several samples per ciphertext.
        scale_bits: the least log2 of the CKKS scale; the smallest ring that fits the depth
            at this scale is used, and its spare bits raise the scale (up to 40).
        ranges: fixed [lo, hi] per activation index (overrides calibration; used when the
            model was trained with these polynomials).
        layout: ``rows`` or ``features`` (see :class:`Plan`).

    Raises:
        UnsupportedModelError: a layer CKKS cannot evaluate here (message says what to use).
        ConfigError: no 128-bit ring fits the circuit.
    """
    segs = _segments(model)
    x = np.asarray(calibration, dtype=np.float64).reshape((-1,) + model.input_shape)
    shape = model.input_shape
    dense: list[list[np.ndarray]] = []  # [W, b] per dense step, in order
    kinds: list[Any] = []
    act_report = []
    act_idx = 0
    max_abs = 1.0
    l1 = 1.0  # bound on every partial sum of the first dense map (for a no-rescale product)
    input_affine = (0.0, 1.0)
    for kind, payload in segs:
        if kind == "dense":
            w, b = _affine_matrix(payload, shape)
            if not dense and x.size:
                flat = np.abs(x.reshape(len(x), -1))
                l1 = max(l1, float((flat @ np.abs(w).T + np.abs(b)).max()))
            for layer in payload:
                x = evaluate_layer(layer, x)
            shape = x.shape[1:]  # the IR shape; the ciphertext holds it flattened (C order)
            dense.append([w, b])
            kinds.append(("dense", len(dense) - 1))
        else:
            if ranges and act_idx in ranges:
                lo, hi = ranges[act_idx]
            else:
                lo, hi = float(x.min()), float(x.max())
                c, h = (hi + lo) / 2, max((hi - lo) / 2, 1e-3) * margin
                lo, hi = c - h, c + h
            deg = degree.get(payload, 15) if isinstance(degree, dict) else degree
            step: PolyStep | CompositeStep
            if deg == COMPOSITE and payload == "relu":
                poly: ChebPoly | CompositeRelu = composite_relu(lo, hi)
                step = CompositeStep(poly)  # type: ignore[arg-type]
            else:
                poly = approximate(payload, lo, hi, _COMPOSITE_ELSE if deg == COMPOSITE else deg)
                step = PolyStep(poly, best_baby(poly.degree))
            if kinds and kinds[-1][0] == "dense":  # fold t = (x - mid)/half into the matrix
                wb = dense[kinds[-1][1]]
                wb[0] = wb[0] / poly.half
                wb[1] = (wb[1] - poly.mid) / poly.half
            elif not kinds:  # the model starts with it: the client encrypts t (public map)
                input_affine = (poly.mid, poly.half)
            else:
                n = int(np.prod(shape))
                dense.append([np.eye(n) / poly.half, -np.full(n, poly.mid) / poly.half])
                kinds.append(("dense", len(dense) - 1))
            x = poly(x)
            act_report.append({"activation": payload, "lo": lo, "hi": hi,
                               "degree": deg if deg != COMPOSITE else poly.degree,
                               "form": "composite-sign" if isinstance(step, CompositeStep)
                               else "chebyshev",
                               "max_err": poly.max_err})
            kinds.append(("act", step))
            act_idx += 1
        max_abs = max(max_abs, float(np.abs(x).max()) if x.size else 1.0)
    if layout not in ("rows", "features"):
        raise ConfigError(f"layout must be rows or features, got {layout!r}", key="fhe.layout")
    out_features = dense[-1][0].shape[0] if kinds[-1][0] == "dense" else int(np.prod(shape))
    if len(kinds) == 1 and kinds[0][0] == "dense":  # one dense map: no rescale (depth 0)
        # Decrypted at scale Δ·ws: slots hold Δ·x times ws·w, ws = 2^(wb - log2 max|w|), and
        # every partial sum is below Δ·ws·l1. The data prime's bits are split evenly between
        # Δ and wb (an encoding error is ~sqrt(N)/scale in the slots, input and weights
        # alike); rotations act on products only (baby size 1), so key switching's additive
        # noise is negligible at that scale.
        wexp = int(math.ceil(math.log2(max(float(np.abs(dense[0][0]).max()), 1e-30))))
        spread = int(math.ceil(math.log2(8 * l1))) - wexp
        for prime in _SINGLE_PRIME_BITS:
            wb = (prime - spread) // 2
            scale_bits = prime - spread - wb
            if min(wb, scale_bits) >= _SINGLE_SCALE_BITS:
                break
        weight_scale = float(2.0 ** (wb - wexp))
        depth, integer_bits = 0, wb - wexp + int(math.ceil(math.log2(8 * l1)))
    else:
        weight_scale = 0.0
        depth = sum(1 if k == "dense" else v.depth for k, v in kinds)
        integer_bits = max(8, int(math.ceil(math.log2(4 * max_abs))) + 2)
    in_features = int(np.prod(model.input_shape))
    if layout == "features":
        params = choose_params(depth, scale_bits=scale_bits, integer_bits=integer_bits,
                               max_scale_bits=40 if depth else scale_bits)
        steps, plan_kw = feature_steps(kinds, dense, in_features, batch, params, weight_scale)
        block = params.slots
    else:
        params, steps, block = row_steps(kinds, dense, model, batch, scale_bits, depth,
                                          integer_bits, weight_scale)
        plan_kw = {}
    slots = params.slots
    relin = any(not isinstance(st, DenseMap | FeatureMap) for st in steps)
    rot = sorted(normalise_steps([s for st in steps if isinstance(st, DenseMap | FeatureMap)
                                  for s in st.steps], slots))
    plan = Plan(params, tuple(rot), relin, in_features, next_pow2(in_features), block,
                out_features, model.task, input_affine, layout=layout, **plan_kw)
    report = {
        "depth": depth,
        "poly_degree_n": params.poly_degree,
        "coeff_bits": list(params.coeff_bits),
        "rotation_keys": len(rot),
        "layout": layout,
        "activations": act_report,
        "dense_maps": [(d.weight.shape, d.rotations) for d in steps
                       if isinstance(d, DenseMap | FeatureMap)],
        "cost": estimate_cost(plan, steps, batch),
    }
    return Compiled(plan, steps, report)


_SINGLE_PRIME_BITS = (54, 60)  # a depth-0 chain [q, q]: N = 4096 allows 2 x 54 bits, 8192 60
_SINGLE_SCALE_BITS = 20  # least input (and weight) scale of a depth-0 circuit


COMPOSITE = "composite"  # ReLU as x(1 + sign x)/2, sign a composite polynomial (.sign)
_COMPOSITE_ELSE = 63  # what "composite" means for the smooth activations
AUTO_DEGREES: tuple[int | str, ...] = (3, 5, 7, 11, 15, 23, 31, 47, 63, COMPOSITE)


def compile_model(
    model: Model,
    calibration: np.ndarray,
    *,
    degree: int | dict[str, int] | str = "auto",
    min_agreement: float = 0.995,
    max_rel_err: float = 1e-3,
    **kw: Any,
) -> Compiled:
    """Compile ``model`` for CKKS.

    With ``degree="auto"`` the lowest degree of :data:`AUTO_DEGREES` is used whose circuit
    (evaluated in plaintext, :func:`approx_forward`) agrees with the model on the calibration
    inputs: the argmax on at least ``min_agreement`` of them (classification) or within
    ``max_rel_err`` (regression). The accuracy cost of the approximation is reported in
    ``report["approximation"]`` either way. ``layout="auto"`` (default) packs one sample per
    ciphertext for a batch of 1 and otherwise takes whichever of ``rows`` and ``features``
    :func:`estimate_cost` finds cheaper (``report["layout"]``). Other arguments: see
    :func:`_compile_once` (``margin``, ``batch``, ``scale_bits``, ``ranges``, ``layout``).

    Raises:
        UnsupportedModelError: a layer CKKS cannot evaluate here (message says what to use).
        ConfigError: no 128-bit ring fits the circuit.
    """
    x = np.asarray(calibration, dtype=np.float64).reshape((-1,) + model.input_shape)
    probe = x[:: max(1, len(x) // 500)]
    from veil.models.ir import evaluate

    want = evaluate(model, probe).reshape(len(probe), -1)
    has_act = any(type(layer) in _ACT_NAMES for layer in model.layers)
    has_relu = any(isinstance(layer, ReLU) for layer in model.layers)
    auto = tuple(d for d in AUTO_DEGREES if has_relu or d != COMPOSITE)
    candidates = auto if degree == "auto" and has_act else (
        (15,) if degree == "auto" else (degree,))
    layout = kw.pop("layout", "auto")
    if layout == "auto":
        layout = "rows" if kw.get("batch", 1) == 1 else "auto"
    first = "rows" if layout == "auto" else layout
    comp = None
    for d in candidates:
        comp = _compile_once(model, x, degree=d, layout=first, **kw)  # type: ignore[arg-type]
        got = approx_forward(comp, model, probe)[:, : want.shape[1]]
        if model.task == "classification" and want.shape[1] > 1:
            acc = {"agreement": float(np.mean(got.argmax(1) == want.argmax(1)))}
            ok = acc["agreement"] >= min_agreement
        else:
            rel = np.abs(got - want) / np.maximum(1.0, np.abs(want))
            acc = {"max_rel_err": float(rel.max())}
            ok = acc["max_rel_err"] <= max_rel_err
        comp.report["approximation"] = {"degree": d, "on": len(probe), **acc}
        if ok:
            break
    assert comp is not None
    if layout == "auto":  # the cheaper layout for this batch, same polynomials
        d = comp.report["approximation"]["degree"]
        other = _compile_once(model, x, degree=d, layout="features", **kw)
        if other.report["cost"] < comp.report["cost"]:
            other.report["approximation"] = comp.report["approximation"]
            other.report["rows_cost"] = comp.report["cost"]
            comp = other
    return comp


def approx_forward(compiled: Compiled, model: Model, x: np.ndarray) -> np.ndarray:
    """The compiled circuit in plaintext (float64): what CKKS computes, without the noise."""
    shift, scale = compiled.plan.input_affine
    y = (np.asarray(x, dtype=np.float64).reshape(len(x), -1) - shift) / scale
    for st in compiled.steps:
        if isinstance(st, DenseMap | FeatureMap):
            y = y @ st.weight.T + st.bias
        else:
            y = st.poly.eval_t(y)
    return y
