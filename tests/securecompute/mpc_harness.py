"""Run three MPC parties (threads) on an in-process network, with a function per test."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from veil.crypto.fixed import decode, encode
from veil.crypto.prg import SecureRng
from veil.crypto.replicated import Share, reconstruct, share
from veil.securecompute.mpc.net import PARTY_NAMES
from veil.securecompute.mpc.setup import make_engine
from veil.transport.channel import InProcessNetwork


def run3(fn: Callable[..., Any], *per_party_args: list[Any], frac_bits: int = 16,
         deadline_s: float = 20.0, errors: list | None = None) -> list[Any]:
    """``fn(engine, *args_i)`` on parties 0, 1, 2; returns their results (re-raises the
    first error, or with ``errors`` given fills it with each party's error instead)."""
    net = InProcessNetwork(PARTY_NAMES)
    out: list[Any] = [None] * 3
    errs: list[BaseException | None] = [None] * 3

    def go(i: int) -> None:
        try:
            eng = make_engine(net[PARTY_NAMES[i]], frac_bits=frac_bits, deadline_s=deadline_s)
            out[i] = fn(eng, *[a[i] for a in per_party_args])
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errs[i] = e
            net[PARTY_NAMES[i]].close()

    ts = [threading.Thread(target=go, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    if errors is not None:
        errors.extend(errs)
        return out
    for e in errs:
        if e is not None:
            raise e
    return out


def shares_of(x: np.ndarray, frac_bits: int | None = 16, seed: int = 0) -> tuple[Share, ...]:
    """Replicated shares of reals (fixed point) or, with frac_bits=None, of int64 values."""
    u = encode(x, frac_bits) if frac_bits is not None else np.asarray(x, np.int64).view(np.uint64)
    return share(u, SecureRng.from_seed(seed, "test-shares"))


def open_shares(results: list[Share], frac_bits: int | None = 16) -> np.ndarray:
    u = reconstruct({0: results[0], 1: results[1], 2: results[2]})
    # consistency: every pair reconstructs the same
    for pair in ((0, 1), (1, 2), (0, 2)):
        np.testing.assert_array_equal(reconstruct({p: results[p] for p in pair}), u)
    return decode(u, frac_bits) if frac_bits is not None else u.view(np.int64)
