"""Party set-up: pairwise component keys over the (confidential) channel, then an Engine.

Party ``i`` draws ``K_{i+1}`` fresh from the OS CSPRNG and sends it to party ``i + 1``
(one message each way per pair, over mutual TLS in deployment); it receives ``K_i`` from
party ``i − 1``. No dealer is involved.
"""

from __future__ import annotations

import os

import numpy as np

from veil.crypto.prg import SecureRng
from veil.crypto.replicated import PairStreams
from veil.errors import MalformedMessageError
from veil.securecompute.mpc.engine import Engine
from veil.securecompute.mpc.net import PARTY_NAMES, PartyNet
from veil.transport.channel import Channel

__all__ = ["make_engine"]


def make_engine(
    channel: Channel, *, frac_bits: int = 16, deadline_s: float = 30.0,
    names: tuple[str, ...] = PARTY_NAMES,
) -> Engine:
    """Agree on component keys with the two other parties and return this party's Engine.

    Raises:
        AbortError: a peer did not answer within ``deadline_s``.
        MalformedMessageError: a key message of the wrong size.
    """
    net = PartyNet(channel, names, deadline_s)
    i = net.index
    k_next = os.urandom(32)
    got = net.exchange(
        {(i + 1) % 3: [np.frombuffer(k_next, dtype=np.uint8)]},
        {(i - 1) % 3: [((32,), np.dtype(np.uint8))]},
    )
    k_own = got[(i - 1) % 3][0].tobytes()
    if len(k_own) != 32:
        raise MalformedMessageError("component key of the wrong size", peer=names[(i - 1) % 3])
    return Engine(net, PairStreams(i, k_own, k_next), SecureRng.fresh(), frac_bits)
