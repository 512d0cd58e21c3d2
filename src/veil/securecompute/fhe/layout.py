"""How a compiled circuit is laid out on ciphertexts, and what a layout costs.

* ``rows`` — samples side by side, each in a block of slots (:class:`.matvec.DenseMap`):
  one sample uses a whole ciphertext; a batch packs ``slots / block`` samples per ciphertext.
* ``features`` — one ciphertext holds k features of up to ``seg`` samples
  (:class:`.featurewise.FeatureMap`): the work of a layer does not grow with the batch.

:func:`estimate_cost` counts a request's operations (weighted by their measured relative
cost) so that the compiler can pick the cheaper layout for a batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from veil.crypto.ckks import CkksParams, choose_params
from veil.securecompute.fhe.featurewise import FeatureMap, input_map, segment_for
from veil.securecompute.fhe.matvec import DenseMap, batch_block, next_pow2

if TYPE_CHECKING:
    from veil.models.ir import Model
    from veil.securecompute.fhe.compile import Plan

__all__ = ["row_steps", "feature_steps", "estimate_cost"]


def row_steps(kinds: list[Any], dense: list[list[np.ndarray]], model: Model, batch: int,
               scale_bits: int, depth: int, integer_bits: int,
               weight_scale: float) -> tuple[CkksParams, list[Any], int]:
    """Parameters, steps and block of the ``rows`` layout (:mod:`.matvec`).

    Raises:
        ConfigError: no 128-bit ring fits the circuit.
    """
    dense_idx = [i for i, (k, _) in enumerate(kinds) if k == "dense"]
    last_dense = dense_idx[-1] if dense_idx else -1
    period = next_pow2(int(np.prod(model.input_shape)))
    widths, blocks = [period], [period]
    for i in dense_idx:
        w, _ = dense[kinds[i][1]]
        final = i == last_dense and i == len(kinds) - 1
        need, period = batch_block(w, period, final)
        widths += [next_pow2(w.shape[0]), next_pow2(w.shape[1])]
        blocks.append(need)
    block_need = max(widths) if batch == 1 else max(blocks)
    params = choose_params(depth, scale_bits=scale_bits, integer_bits=integer_bits,
                           min_slots=block_need, max_scale_bits=40 if depth else scale_bits)
    slots = params.slots
    block = slots if batch == 1 else block_need
    steps: list[Any] = []
    period = next_pow2(int(np.prod(model.input_shape)))
    for i, (k, v) in enumerate(kinds):
        if k == "dense":
            w, b = dense[v]
            dm = DenseMap(w, b, period, block, slots,
                          final=(i == last_dense and i == len(kinds) - 1),
                          rescale=depth > 0, weight_scale=weight_scale)
            period = dm.out_period
            steps.append(dm)
        else:
            steps.append(v)
    return params, steps, block


def feature_steps(kinds: list[Any], dense: list[list[np.ndarray]], in_features: int,
                   batch: int, params: CkksParams,
                   weight_scale: float) -> tuple[list[Any], dict[str, Any]]:
    """Steps and plan fields of the ``features`` layout (:mod:`.featurewise`)."""
    slots = params.slots
    seg = segment_for(batch, slots)
    imap = input_map(in_features, slots // seg)
    cur = imap
    steps: list[Any] = []
    for k, v in kinds:
        if k == "dense":
            w, b = dense[v]
            fm = FeatureMap(w, b, cur, seg, slots, rescale=params.depth > 0,
                            weight_scale=weight_scale)
            cur = fm.out_map
            steps.append(fm)
        else:
            steps.append(v)
    return steps, {"seg": seg, "in_map": imap, "out_map": cur}


# relative cost of one operation at N = 4096 with three primes (measured: rotation 0.74 ms,
# plaintext product 0.07 ms, ciphertext product ~1 ms, encrypt + send + decrypt ~2.4 ms)
_COST = {"rotation": 1.0, "plain_product": 0.1, "product": 1.4, "ciphertext": 3.0}


def estimate_cost(plan: Plan, steps: list[Any], batch: int) -> float:
    """Relative server + client work of one request of ``batch`` samples (layout choice)."""
    ring = plan.params.poly_degree / 4096 * len(plan.params.coeff_bits) / 3
    per = max(1, plan.per_ciphertext)
    reqs = -(-batch // per)
    cost, cts = 0.0, (len(plan.in_map) if plan.layout == "features" else 1)
    cost += _COST["ciphertext"] * cts
    for st in steps:
        if isinstance(st, DenseMap | FeatureMap):
            cost += _COST["rotation"] * st.rotations + _COST["plain_product"] * st.products
            cts = st.groups if isinstance(st, FeatureMap) else 1
        else:
            cost += _COST["product"] * st.products * cts
    cost += _COST["ciphertext"] * cts
    return float(cost * reqs * ring)
