"""Oblivious evaluation of decision-tree ensembles on shared inputs and shared trees.

Model owner (:func:`compile_forest`): every tree is padded to the ensemble's depth ``D``
(a leaf above depth ``D`` becomes a dummy node whose two subtrees repeat the leaf), so the
shape reveals only ``(n_trees, D, n_features, n_outputs)``. Shared tensors: a one-hot
feature-selection matrix ``S`` (integers, ``n_features × n_trees·(2^D − 1)``), the
thresholds (fixed point) and the leaf values divided by ``n_trees`` (fixed point).

Parties (:func:`evaluate_forest`), for a batch of inputs:

1. ``v = x @ S`` selects each node's feature [1 round, no truncation];
2. all node comparisons in ONE batch: ``c = [v > t] = [t − v < 0]`` [sign rounds], turned
   into 0/1 integers [2 rounds];
3. each leaf's indicator is the product along its path of ``c`` (right) or ``1 − c``
   (left): ``D`` factors multiplied pairwise [⌈log2 D⌉ rounds];
4. ``y = Σ_{trees, leaves} indicator · value`` as one matrix product [1 round].

Exactly one leaf per tree has indicator 1 and nothing about the path is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from veil.crypto.fixed import encode, encode_int
from veil.crypto.replicated import Share
from veil.securecompute.mpc.compare import bit_to_arith, sign_bit
from veil.securecompute.mpc.engine import Engine

if TYPE_CHECKING:
    from veil.models.ir import TreeEnsemble

__all__ = [
    "compile_forest", "padded_forest", "evaluate_forest", "path_tables", "float32_key",
    "KEY_BITS",
]

KEY_BITS = 34  # comparison ring for differences of two 32-bit order keys


def float32_key(x: np.ndarray) -> np.ndarray:
    """An order-preserving integer for each value rounded to float32 (sign-magnitude of the
    IEEE bits): ``float32(a) <= float32(b)`` iff ``key(a) <= key(b)``. Forest inputs and
    thresholds use it so that comparisons are exactly scikit-learn's (which compares
    float32 inputs); a fixed-point grid cannot separate values 1e-11 apart."""
    bits = np.asarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))


def _threshold_keys(thr: np.ndarray) -> np.ndarray:
    """Key of the largest float32 ≤ thr: ``float32(x) ≤ thr`` iff ``key(x) ≤ this``."""
    t32 = thr.astype(np.float32)
    t32 = np.where(t32.astype(np.float64) > thr, np.nextafter(t32, np.float32(-np.inf)), t32)
    return float32_key(t32)


def _pad_tree(feat, thr, left, right, val, depth: int):
    n_inner, n_leaf = 2**depth - 1, 2**depth
    f = np.zeros(n_inner, dtype=np.int64)
    t = np.zeros(n_inner)
    leaves = np.zeros((n_leaf, val.shape[1]))
    stack = [(0, 0, 0)]  # (sklearn node, heap position, depth)
    while stack:
        node, pos, d = stack.pop()
        if d == depth:
            leaves[pos - n_inner] = val[node]
            continue
        if left[node] == -1:  # leaf early: dummy split, both sides repeat it
            stack += [(node, 2 * pos + 1, d + 1), (node, 2 * pos + 2, d + 1)]
        else:
            f[pos], t[pos] = feat[node], thr[node]
            stack += [(int(left[node]), 2 * pos + 1, d + 1), (int(right[node]), 2 * pos + 2, d + 1)]
    return f, t, leaves


def padded_forest(ens: TreeEnsemble) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``(depth, selection (F, T·I) 0/1, thresholds (T·I,), leaves (T, L, out) / T)`` in
    float64: every tree padded to the ensemble's depth (heap order)."""
    depth = max(1, ens.depth())
    feats, thrs, leaves = [], [], []
    for tree in zip(ens.features, ens.thresholds, ens.lefts, ens.rights, ens.values):
        f, t, lv = _pad_tree(*tree, depth)
        feats.append(f)
        thrs.append(t)
        leaves.append(lv)
    n_inner = 2**depth - 1
    sel = np.zeros((ens.n_features, ens.n_trees * n_inner))
    sel[np.concatenate(feats), np.arange(ens.n_trees * n_inner)] = 1.0
    return depth, sel, np.concatenate(thrs), np.stack(leaves) / ens.n_trees


def compile_forest(
    ens: TreeEnsemble, frac_bits: int, keyed: bool
) -> tuple[dict, list[np.ndarray]]:
    """Public shape parameters and the ring tensors to share (selection, thresholds, leaves).

    With ``keyed`` (the forest reads the model input) thresholds are float32 order keys
    and the input is sent as keys (:func:`float32_key`); otherwise fixed point."""
    depth, sel, thr, leaf = padded_forest(ens)
    params = {"depth": depth, "n_trees": ens.n_trees, "n_features": ens.n_features,
              "n_outputs": ens.n_outputs, "keyed": keyed}
    thr_ring = encode_int(_threshold_keys(thr)) if keyed else encode(thr, frac_bits)
    return params, [encode_int(sel.astype(np.int64)), thr_ring,
                    encode(leaf.reshape(-1, ens.n_outputs), frac_bits)]


def path_tables(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """For every leaf and level: the heap index of the node on its path and whether the
    path goes right there (``(depth, 2^depth)`` each)."""
    n_leaf = 2**depth
    nodes = np.zeros((depth, n_leaf), dtype=np.int64)
    right = np.zeros((depth, n_leaf), dtype=bool)
    for leaf in range(n_leaf):
        pos = 0
        for d in range(depth):
            bit = (leaf >> (depth - 1 - d)) & 1
            nodes[d, leaf], right[d, leaf] = pos, bool(bit)
            pos = 2 * pos + 1 + bit
    return nodes, right


def evaluate_forest(eng: Engine, x: Share, params: dict, w: list[Share], bits: int) -> Share:
    """The ensemble's mean leaf value for each row of ``x`` (N, F) as fixed point (N, out)."""
    depth, n_trees = params["depth"], params["n_trees"]
    sel, thr, leaf = w
    n = x.shape[0]
    v = eng.matmul(x, sel)  # (N, T·I): one-hot selection, integer weights, no truncation
    t = Share(np.broadcast_to(thr.a, v.shape), np.broadcast_to(thr.b, v.shape))
    bits = KEY_BITS if params["keyed"] else bits
    go_right = bit_to_arith(eng, sign_bit(eng, eng.sub(t, v), bits))  # [v > t]
    c = go_right.reshape(n, n_trees, 2**depth - 1)
    nodes, right = path_tables(depth)
    fa, fb = c.a[:, :, nodes], c.b[:, :, nodes]  # (N, T, D, L)
    one = eng.constant(np.ones(fa.shape, dtype=np.uint64))
    flip = ~right  # left: 1 − c
    fa = np.where(flip, one.a - fa, fa)
    fb = np.where(flip, one.b - fb, fb)
    fac = Share(fa, fb)
    while fac.shape[2] > 1:
        k = fac.shape[2] // 2
        prod = eng.mul(fac[:, :, :k], fac[:, :, k : 2 * k])
        if fac.shape[2] % 2:
            last = fac[:, :, 2 * k :]
            prod = Share(np.concatenate([prod.a, last.a], 2), np.concatenate([prod.b, last.b], 2))
        fac = prod
    ind = fac.reshape(n, -1)  # (N, T·L) 0/1 integers
    return eng.matmul(ind, leaf)
