"""The party side of a compiled model: :func:`evaluate_plan` runs a plan (from
:func:`veil.securecompute.mpc.plan.compile_model`) on shares, and :class:`MpcConfig`.

This module imports no model code (no torch), so a party process starts quickly and sees
only the public plan: layer kinds and shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from veil.crypto.fixed import encode
from veil.crypto.replicated import Share
from veil.errors import ConfigError
from veil.securecompute.mpc.compare import max_argmax, relu
from veil.securecompute.mpc.engine import Engine
from veil.securecompute.mpc.poly import evaluate_piecewise, piecewise
from veil.securecompute.mpc.trees import evaluate_forest

__all__ = ["MpcConfig", "evaluate_plan", "patches", "windows"]


@dataclass(frozen=True)
class MpcConfig:
    """Engine parameters (public).

    Attributes:
        frac_bits: fixed-point fraction bits ``f``.
        compare_bits: ring of comparisons; inputs of ReLU/max/trees/activations must have
            magnitude below ``2^(compare_bits − 1 − frac_bits)`` (32768 for the defaults).
        deadline_s: a party that sends nothing for this long aborts the computation.
    """

    frac_bits: int = 16
    compare_bits: int = 32
    deadline_s: float = 30.0

    def __post_init__(self) -> None:
        if not 8 <= self.frac_bits <= 24:
            raise ConfigError("frac_bits must be in 8..24", key="mpc.frac_bits")
        if not self.frac_bits + 2 <= self.compare_bits <= 64:
            raise ConfigError("compare_bits must be in frac_bits+2..64", key="mpc.compare_bits")
        if self.deadline_s <= 0:
            raise ConfigError("deadline_s must be positive", key="mpc.deadline_s")


def _gather_index(h: int, w: int, kh: int, kw: int, stride, padding):
    """Flat indices into the padded (H+2p)(W+2p) image of every patch element: (P, kh·kw)."""
    (sh, sw), (ph, pw) = stride, padding
    hp, wp = h + 2 * ph, w + 2 * pw
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    rows = (np.arange(oh) * sh)[:, None, None, None] + np.arange(kh)[None, None, :, None]
    cols = (np.arange(ow) * sw)[None, :, None, None] + np.arange(kw)[None, None, None, :]
    return (rows * wp + cols).reshape(oh * ow, kh * kw), (oh, ow)


def patches(x: np.ndarray, kh: int, kw: int, stride, padding) -> tuple[np.ndarray, tuple]:
    """Convolution patches of ring elements (N, C, H, W) → (N, P, C·kh·kw) by one gather
    (zero padding is a valid sharing of 0)."""
    n, c, h, w = x.shape
    (ph, pw) = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    idx, out = _gather_index(h, w, kh, kw, stride, padding)
    flat = xp.reshape(n, c, -1)[:, :, idx]  # (N, C, P, kk)
    return flat.transpose(0, 2, 1, 3).reshape(n, idx.shape[0], c * kh * kw), out


def windows(x: np.ndarray, kernel, stride) -> tuple[np.ndarray, tuple]:
    """Pooling windows (N, C, H, W) → (N, C, OH·OW, kh·kw) by one gather."""
    n, c, h, w = x.shape
    idx, out = _gather_index(h, w, kernel[0], kernel[1], stride, (0, 0))
    return x.reshape(n, c, -1)[:, :, idx], out


def _bcast(s: Share, shape: tuple[int, ...]) -> Share:
    return Share(np.broadcast_to(s.a, shape), np.broadcast_to(s.b, shape))


def _layer(eng: Engine, spec: dict[str, Any], w: list[Share], x: Share, bits: int) -> Share:
    kind = spec["kind"]
    f = eng.f
    if kind == "linear":
        y = eng.matmul_trunc(x, w[0])
        return eng.add(y, _bcast(w[1], y.shape))
    if kind == "conv":
        kh, kw = spec["k"]
        ca, (oh, ow) = patches(x.a, kh, kw, tuple(spec["stride"]), tuple(spec["padding"]))
        cb, _ = patches(x.b, kh, kw, tuple(spec["stride"]), tuple(spec["padding"]))
        y = eng.matmul_trunc(Share(ca, cb), w[0])  # (N, P, O)
        y = eng.add(y, _bcast(w[1], y.shape))
        n = x.shape[0]
        return Share(y.a.transpose(0, 2, 1).reshape(n, spec["out"], oh, ow),
                     y.b.transpose(0, 2, 1).reshape(n, spec["out"], oh, ow))
    if kind == "relu":
        return relu(eng, x, bits)
    if kind in ("sigmoid", "tanh", "gelu"):
        return evaluate_piecewise(eng, x, piecewise(kind), bits)
    if kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if kind in ("avgpool", "maxpool"):
        k, s = tuple(spec["k"]), tuple(spec["stride"])
        (wa, (oh, ow)), (wb, _) = windows(x.a, k, s), windows(x.b, k, s)
        n, c = x.shape[:2]
        if kind == "avgpool":
            summed = Share(wa.sum(axis=-1, dtype=np.uint64), wb.sum(axis=-1, dtype=np.uint64))
            inv = int(encode(1.0 / (k[0] * k[1]), f))
            y = eng.trunc(eng.scale(summed, inv))
        else:
            y = max_argmax(eng, Share(wa, wb), bits)[0][..., 0]
        return y.reshape(n, c, oh, ow)
    if kind == "argmax":
        _, idx = max_argmax(eng, x, bits, with_index=True)
        return eng.scale(idx, 1 << f)  # class id in fixed point
    if kind == "softmax":
        m, _ = max_argmax(eng, x, bits)
        d = eng.sub(x, _bcast(m, x.shape))  # ≤ 0
        e = evaluate_piecewise(eng, d, piecewise("exp"), bits)
        tot = Share(e.a.sum(axis=-1, keepdims=True, dtype=np.uint64),
                    e.b.sum(axis=-1, keepdims=True, dtype=np.uint64))
        r = evaluate_piecewise(eng, tot, piecewise("reciprocal"), bits)
        return eng.mul_trunc(e, _bcast(r, e.shape))
    if kind == "forest":
        return evaluate_forest(eng, x, spec, w, bits)
    raise ConfigError(f"unknown layer kind {kind!r} in the plan")


def evaluate_plan(eng: Engine, plan: dict[str, Any], weights: list[Share], x: Share) -> Share:
    """Evaluate the plan on shares; rounds and bytes are counted per layer kind."""
    bits = int(plan["compare_bits"])
    pos = 0
    for spec in plan["layers"]:
        w = weights[pos : pos + spec["n"]]
        pos += spec["n"]
        with eng.op(spec["kind"]):
            x = _layer(eng, spec, w, x, bits)
    return x
